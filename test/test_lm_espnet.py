"""sprune LMs and ESPnet: export / import against espnet2's own TransformerLM and loader, the
key/value cache behind ESPnet's scorer interface, ESPnet's beam searches with the sprune LM
as a scorer, and every user error of `sprune lm import / export` (exit 2, one line).

Models are tiny and random (vocab 30, d_model 16, 2 layers, fixed seeds). Every LayerNorm is
randomised too, so a swapped norm would show. Prefixes never contain id 0 (`<blank>`), which
ESPnet's TransformerLM masks as padding (see sprune.lm.espnet_format)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml
from espnet.nets.scorer_interface import BatchScorerInterface

from sprune.lm.checkpoint import load_lm, save_lm
from sprune.lm.config import LMConfig
from sprune.lm.espnet_format import (CONFIG_FILE, MODEL_FILE, TOKENS_FILE, espnet_name,
                                     to_espnet_state, write_espnet_lm)
from sprune.lm.model import TransformerLM
from sprune.lm.vocab import LMVocab

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V = 30
SOS = V - 1
TOL = 1e-5
TEXT = ["the cat sat on the mat", "a dog ran to the cat", "the mat is red", "dogs and cats sat"]


def tiny(pos_enc: str = "sinusoidal", **sizes) -> LMConfig:
    base = dict(vocab_size=V, embed_dim=12, d_model=16, heads=2, ffn_dim=24, layers=2,
                pos_enc=pos_enc)
    return LMConfig(**{**base, **sizes})


# block 0: 2 of 4 heads, no FFN; block 1: no attention, 7 FFN units; three factorized layers
# (rank 0: every rank component pruned, the layer outputs its bias)
SHRUNK = dict(heads=4, layer_heads=[2, 0], layer_ffn=[0, 7],
              ranks={"layers.0.attention.q": 3, "layers.0.attention.v": 0,
                     "layers.1.ffn.down": 2})


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn afresh (LayerNorm gains and biases included), eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return module.eval()


def random_lm(config: LMConfig, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    return randomised(TransformerLM(config), seed)


def prefixes(batch: int, length: int, seed: int) -> torch.Tensor:
    """[batch, length] token ids: <sos> then ids 1 .. V-2 (never <blank> or <sos/eos>)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V - 1, (batch, length), generator=generator)
    tokens[:, 0] = SOS
    return tokens


def one_line(done) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = done.stderr.strip()
    assert message and "\n" not in message, done.stderr
    return message


def build_espnet(config_file, model_file):
    """ESPnet's own loader: (ESPnetLanguageModel, the keys the .pth held)."""
    from espnet2.tasks.lm import LMTask

    model, _ = LMTask.build_model_from_file(config_file, model_file)
    return model.eval(), set(torch.load(model_file, weights_only=True))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A sentencepiece model with exactly V ids once <sos/eos> is added."""
    vocab = LMVocab.train(TEXT * 5, V)
    path = tmp_path_factory.mktemp("bpe") / "bpe.model"
    vocab.save(path)
    assert vocab.vocab_size == V
    return path


# -- parity with espnet2's TransformerLM -------------------------------------------------------
def assert_same_scores(ours: TransformerLM, theirs, steps: int = 7) -> None:
    """Full-sequence log-probs and `batch_score` step by step (three hypotheses, each
    model with its own states) agree to TOL. `theirs` is espnet2's TransformerLM."""
    tokens = prefixes(3, 9, seed=5)
    with torch.no_grad():
        full_ours = ours.logits(tokens).log_softmax(-1)
        full_theirs = theirs(tokens, None)[0].log_softmax(-1)
        torch.testing.assert_close(full_ours, full_theirs, atol=TOL, rtol=0)
        ys, states_ours, states_theirs = tokens[:, :1], [None] * 3, [None] * 3
        for t in range(steps):
            logp_ours, states_ours = ours.batch_score(ys, states_ours, None)
            logp_theirs, states_theirs = theirs.batch_score(ys, states_theirs, None)
            torch.testing.assert_close(logp_ours, logp_theirs, atol=TOL, rtol=0)
            torch.testing.assert_close(logp_ours, full_ours[:, t], atol=TOL, rtol=0)
            ys = tokens[:, :t + 2]


@pytest.mark.parametrize("pos_enc", ["sinusoidal", "none"])
def test_export_loads_in_espnet_with_same_scores(pos_enc, bpe, tmp_path, cli):
    lm = random_lm(tiny(pos_enc), seed=1)
    with torch.no_grad():  # a masked LM exports as it is: its zeros are weights
        lm.layers[0].ffn.up.weight[:, ::2] = 0.0
    save_lm(tmp_path / "lm", lm, bpe)
    done = cli("lm", "export", tmp_path / "lm", "--out", tmp_path / "espnet")
    assert done.returncode == 0, done.stderr
    assert "espnet2 TransformerLM" in done.stdout
    out = tmp_path / "espnet"
    assert sorted(p.name for p in out.iterdir()) == ["bpe.model", CONFIG_FILE, MODEL_FILE,
                                                     TOKENS_FILE]
    model, saved_keys = build_espnet(out / CONFIG_FILE, out / MODEL_FILE)
    # ESPnet loads with strict=False: check that the file holds exactly its keys
    assert saved_keys == set(model.state_dict())
    document = yaml.safe_load((out / CONFIG_FILE).read_text())
    assert document["lm_conf"]["pos_enc"] == (None if pos_enc == "none" else "sinusoidal")
    vocab = LMVocab.load(bpe)
    assert document["token_list"] == vocab.token_list
    assert (out / TOKENS_FILE).read_text().splitlines() == vocab.token_list
    assert (out / "bpe.model").read_bytes() == bpe.read_bytes()
    assert model.sos == model.eos == SOS
    assert int(torch.count_nonzero(model.lm.encoder.encoders[0].feed_forward.w_1.weight)) \
        == int(torch.count_nonzero(lm.layers[0].ffn.up.weight))
    assert_same_scores(lm, model.lm)


@pytest.mark.parametrize("pos_enc", ["sinusoidal", None])
def test_import_of_espnet_lm_gives_same_scores(pos_enc, bpe, tmp_path, cli):
    from espnet2.lm.espnet_model import ESPnetLanguageModel
    from espnet2.lm.transformer_lm import TransformerLM as EspnetLM

    torch.manual_seed(2)
    # `head` left out: ESPnet's default (2) applies, and import must apply it too
    lm_conf = {"pos_enc": pos_enc, "embed_unit": 12, "att_unit": 16, "unit": 24, "layer": 2}
    espnet = ESPnetLanguageModel(randomised(EspnetLM(V, **lm_conf), seed=3), V)
    torch.save(espnet.state_dict(), tmp_path / "lm.pth")
    config = {"lm": "transformer", "lm_conf": lm_conf, "model": "lm",
              "model_conf": {"ignore_id": 0}, "init": None,
              "token_list": LMVocab.load(bpe).token_list, "bpemodel": "somewhere/bpe.model"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = cli("lm", "import", "--config", tmp_path / "config.yaml", "--model",
               tmp_path / "lm.pth", "--bpe", bpe, "--out", tmp_path / "ours")
    assert done.returncode == 0, done.stderr
    ours, document = load_lm(tmp_path / "ours")
    assert ours.config.heads == 2 and ours.config.pos_enc == (pos_enc or "none")
    assert document["info"]["imported_from"]["model"] == str((tmp_path / "lm.pth").resolve())
    assert (tmp_path / "ours" / "bpe.model").read_bytes() == bpe.read_bytes()
    assert_same_scores(ours, espnet.lm.eval())

    # and back: export of the imported LM holds the very same tensors
    done = cli("lm", "export", tmp_path / "ours", "--out", tmp_path / "back")
    assert done.returncode == 0, done.stderr
    back = torch.load(tmp_path / "back" / MODEL_FILE, weights_only=True)
    original = espnet.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    assert yaml.safe_load((tmp_path / "back" / CONFIG_FILE).read_text())["lm_conf"]["head"] == 2


def test_import_without_bpe_exports_back_with_token_list(tmp_path, cli):
    lm = random_lm(tiny(), seed=4)
    tokens = ["<blank>", "<unk>", *(f"w{i}" for i in range(V - 3)), "<sos/eos>"]
    write_espnet_lm(tmp_path / "espnet", lm, tokens)
    espnet = tmp_path / "espnet"
    done = cli("lm", "import", "--config", espnet / CONFIG_FILE, "--model", espnet / MODEL_FILE,
               "--out", tmp_path / "ours")
    assert done.returncode == 0, done.stderr
    assert "no bpe.model" in done.stdout and not (tmp_path / "ours" / "bpe.model").exists()
    message = one_line(cli("lm", "export", tmp_path / "ours", "--out", tmp_path / "back"))
    assert "--token-list" in message
    done = cli("lm", "export", tmp_path / "ours", "--out", tmp_path / "back", "--token-list",
               espnet / TOKENS_FILE)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((tmp_path / "back" / CONFIG_FILE).read_text())["token_list"] == tokens


def test_every_weight_has_an_espnet_name():
    from espnet2.lm.transformer_lm import TransformerLM as EspnetLM

    lm = TransformerLM(tiny())
    state, lm_conf = to_espnet_state(lm)
    espnet = EspnetLM(V, **lm_conf)
    assert {k: list(v.shape) for k, v in state.items()} \
        == {k: list(v.shape) for k, v in espnet.state_dict().items()}
    assert espnet_name("layers.1.ffn_norm.bias") == "encoder.encoders.1.norm2.bias"


# -- the key/value cache -----------------------------------------------------------------------
CACHE_CONFIGS = {"uniform": tiny(), "no-pos-enc": tiny("none"), "shrunk": tiny(**SHRUNK)}


@pytest.mark.parametrize("name", CACHE_CONFIGS)
def test_step_one_token_at_a_time_equals_logits(name):
    lm = random_lm(CACHE_CONFIGS[name], seed=6)
    tokens = prefixes(3, 10, seed=7)
    with torch.no_grad():
        full = lm.logits(tokens).log_softmax(-1)
        cache = lm.init_cache(3)
        for t in range(tokens.shape[1]):
            logp, cache = lm.step(tokens[:, t:t + 1], cache)
            torch.testing.assert_close(logp, full[:, t], atol=TOL, rtol=0)
        assert cache.lengths.tolist() == [10, 10, 10]
        # a first call may feed a whole prefix, then continue one token at a time
        logp, cache = lm.step(tokens[:, :4], lm.init_cache(3))
        torch.testing.assert_close(logp, full[:, 3], atol=TOL, rtol=0)
        logp, _ = lm.step(tokens[:, 4:5], cache)
        torch.testing.assert_close(logp, full[:, 4], atol=TOL, rtol=0)


def alone(lm: TransformerLM, prefix: torch.Tensor) -> tuple[torch.Tensor, object]:
    """Score `prefix` [L] token by token through `score` -> (log-probs after it, state)."""
    state = None
    for t in range(1, len(prefix) + 1):
        logp, state = lm.score(prefix[:t], state, None)
    return logp, state


@pytest.mark.parametrize("name", CACHE_CONFIGS)
def test_batch_score_stacks_states_of_different_lengths(name):
    lm = random_lm(CACHE_CONFIGS[name], seed=8)
    seqs = prefixes(3, 9, seed=9)
    lengths = [2, 6, 4]
    with torch.no_grad():
        states = [alone(lm, seqs[b, :n])[1] for b, n in enumerate(lengths)]
        for extra in range(2):  # two stacked steps: the second stacks unstacked states
            ends = [n + extra for n in lengths]
            # ESPnet passes prefixes padded to one width; only the last column is new
            ys = torch.full((3, max(ends) + 1), SOS)
            for b, n in enumerate(ends):
                ys[b, -1] = seqs[b, n]
            logp, states = lm.batch_score(ys, states, None)
            for b, n in enumerate(ends):
                expected = lm.logits(seqs[b:b + 1, :n + 1])[0, -1].log_softmax(-1)
                torch.testing.assert_close(logp[b], expected, atol=TOL, rtol=0)
                assert int(states[b][2].sum()) == n + 1


@pytest.mark.parametrize("name", CACHE_CONFIGS)
def test_cache_select_reorders_hypotheses(name):
    lm = random_lm(CACHE_CONFIGS[name], seed=10)
    seqs = prefixes(3, 6, seed=11)
    with torch.no_grad():
        # a ragged cache (lengths 3, 5, 2), as stacked from beam hypotheses
        states = [alone(lm, seqs[b, :n])[1] for b, n in enumerate([3, 5, 2])]
        cache = lm.stack_states(states)
        index = torch.tensor([2, 0, 0, 1])
        picked = cache.select(index)
        assert picked.lengths.tolist() == [2, 3, 3, 5]
        nxt = torch.tensor([[4], [7], [9], [4]])
        logp, _ = lm.step(nxt, picked)
        for row, (b, token) in enumerate(zip(index.tolist(), nxt[:, 0].tolist())):
            n = [3, 5, 2][b]
            sequence = torch.cat([seqs[b, :n], torch.tensor([token])])[None]
            expected = lm.logits(sequence)[0, -1].log_softmax(-1)
            torch.testing.assert_close(logp[row], expected, atol=TOL, rtol=0)


# -- ESPnet's beam searches ----------------------------------------------------------------------
def nbest(search_class, lm, beam: int = 4) -> list[tuple[list[int], float]]:
    search = search_class(scorers={"lm": lm}, weights={"lm": 1.0}, beam_size=beam,
                          vocab_size=V, sos=SOS, eos=SOS)
    with torch.no_grad():
        hyps = search(torch.zeros(10, 4), maxlenratio=-6.0)
    return [(h.yseq.tolist(), float(h.score)) for h in hyps]


def assert_same_nbest(a, b) -> None:
    assert [y for y, _ in a] == [y for y, _ in b]
    assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-4)


def test_espnet_beam_search_with_sprune_lm_as_scorer():
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.beam_search import BeamSearch
    from espnet2.lm.transformer_lm import TransformerLM as EspnetLM

    lm = random_lm(tiny(), seed=12)
    with torch.no_grad():  # no hypothesis may take <blank>, which ESPnet's LM masks as padding
        lm.output.bias[0] = -30.0
    state, lm_conf = to_espnet_state(lm)
    espnet = EspnetLM(V, **lm_conf)
    espnet.load_state_dict(state)
    espnet.eval()
    assert isinstance(lm, BatchScorerInterface)
    reference = nbest(BeamSearch, espnet)
    assert len(reference) >= 4 and len({tuple(y) for y, _ in reference}) == len(reference)
    assert_same_nbest(nbest(BeamSearch, lm), reference)
    assert_same_nbest(nbest(BatchBeamSearch, lm), reference)
    assert_same_nbest(nbest(BatchBeamSearch, espnet), reference)


def test_espnet_beam_search_with_shrunk_lm():
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.beam_search import BeamSearch

    lm = random_lm(tiny(**SHRUNK), seed=13)
    plain = nbest(BeamSearch, lm)
    assert plain
    assert_same_nbest(nbest(BatchBeamSearch, lm), plain)
    # the n-best score is the LM's log-probability of the hypothesis; one cut at the maximum
    # length (6) gets its <sos/eos> appended unscored
    best, score = plain[0]
    scored = best if len(best) - 2 < 6 else best[:-1]
    with torch.no_grad():
        logp = lm.logits(torch.tensor([scored[:-1]])).log_softmax(-1)[0]
    assert score == pytest.approx(float(logp.gather(1, torch.tensor(scored[1:])[:, None]).sum()),
                                  abs=1e-4)


# -- user errors -----------------------------------------------------------------------------------
@pytest.fixture
def espnet_dir(tmp_path, bpe):
    """An ESPnet LM folder (exported from a random sprune LM with the V-id BPE model)."""
    write_espnet_lm(tmp_path / "espnet", random_lm(tiny(), seed=14), LMVocab.load(bpe).token_list,
                    bpe)
    return tmp_path / "espnet"


def edit_config(folder, **changes):
    path = folder / CONFIG_FILE
    document = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    path.write_text(yaml.safe_dump(document))


def edit_state(folder, change):
    path = folder / MODEL_FILE
    state = torch.load(path, weights_only=True)
    torch.save(change(state), path)


def _extra_layer(state):
    extra = to_espnet_state(TransformerLM(tiny(layers=3)))[0]
    return {f"lm.{k}": v for k, v in extra.items()}


def _acoustic_state(state):
    return {"frontend.logmel.mel": torch.zeros(3), "encoder.embed.conv.0.weight": torch.zeros(2),
            **state}


def _renamed(folder, index: int, token: str) -> list[str]:
    tokens = LMVocab.load(folder / "bpe.model").token_list
    return [*tokens[:index], token, *tokens[index + 1:]]


IMPORT_ERRORS = {
    "config missing": (lambda d: (d / CONFIG_FILE).unlink(), "does not exist"),
    "model missing": (lambda d: (d / MODEL_FILE).unlink(), "does not exist"),
    "bpe missing": (lambda d: (d / "bpe.model").unlink(), "BPE model"),
    "seq_rnn": (lambda d: edit_config(d, lm="seq_rnn"),
                "only espnet2 TransformerLM is supported; got seq_rnn"),
    "asr config": (lambda d: edit_config(d, lm=None, lm_conf=None, encoder="conformer",
                                         decoder="transformer", frontend="default"),
                   "acoustic model (encoder: conformer, decoder: transformer)"),
    "no lm key": (lambda d: edit_config(d, lm=None), "has no lm: key"),
    "yaml": (lambda d: (d / CONFIG_FILE).write_text("lm: [transformer\n"), "not valid YAML"),
    "extra layer": (lambda d: edit_state(d, _extra_layer),
                    "key 'encoder.encoders.2.norm1.weight' does not fit"),
    "acoustic pth": (lambda d: edit_state(d, _acoustic_state),
                     "key 'frontend.logmel.mel' does not fit an ESPnet LM"),
    "missing key": (lambda d: edit_state(d, lambda s: {k: v for k, v in s.items()
                                                       if k != "lm.decoder.bias"}),
                    "key 'decoder.bias' is missing"),
    "shape": (lambda d: edit_config(d, lm_conf={**yaml.safe_load((d / CONFIG_FILE).read_text())
                                                ["lm_conf"], "unit": 32}),
              "key 'encoder.encoders.0.feed_forward.w_1.weight' has shape [24, 16]"),
    "lm_conf key": (lambda d: edit_config(d, lm_conf={"layers": 2}),
                    "config.yaml: lm_conf key 'layers' is not an option"),
    "no sos/eos": (lambda d: edit_config(d, token_list=[*LMVocab.load(d / "bpe.model")
                                                        .token_list[:-1], "<eos>"]),
                   "not <sos/eos>"),
    "token differs": (lambda d: edit_config(d, token_list=_renamed(d, 5, "XX")),
                      "token_list id 5 is 'XX'"),
    "pickled object": (lambda d: torch.save({"args": argparse.Namespace(a=1)}, d / MODEL_FILE),
                       "weights-only torch file (it pickles argparse.Namespace"),
    "not torch": (lambda d: (d / MODEL_FILE).write_text("hello"),
                  "cannot be read as a weights-only torch file (not a torch.save file)"),
    "out is not an LM": (lambda d: (d.parent / "ours" / "keep").mkdir(parents=True),
                         "exists and is not a sprune LM folder"),
}


@pytest.mark.parametrize("case", IMPORT_ERRORS)
def test_import_errors(case, espnet_dir, cli):
    mutate, expected = IMPORT_ERRORS[case]
    mutate(espnet_dir)
    message = one_line(cli("lm", "import", "--config", espnet_dir / CONFIG_FILE, "--model",
                           espnet_dir / MODEL_FILE, "--bpe", espnet_dir / "bpe.model",
                           "--out", espnet_dir.parent / "ours"))
    assert message.startswith("sprune lm: error: ") and expected in message, message
    assert not (espnet_dir.parent / "ours" / "config.json").exists()


def test_import_bpe_of_another_size(tmp_path, bpe, cli):
    tokens = ["<blank>", "<unk>", *(f"w{i}" for i in range(V - 2)), "<sos/eos>"]
    write_espnet_lm(tmp_path / "espnet", random_lm(tiny(vocab_size=V + 1)), tokens)
    message = one_line(cli("lm", "import", "--config", tmp_path / "espnet" / CONFIG_FILE,
                           "--model", tmp_path / "espnet" / MODEL_FILE, "--bpe", bpe,
                           "--out", tmp_path / "ours"))
    assert f"token_list has {V + 1} tokens but BPE model {bpe} gives {V}" in message


def _upstream(root):
    from sprune.upstream import UpstreamModel, save_upstream, tiny_config

    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "lm")


def _run_folder(root):
    (root / "lm").mkdir()
    (root / "lm" / "experiment.json").write_text(json.dumps({"task": "intent"}))


EXPORT_ERRORS = {
    "shrunk": (lambda r, b: save_lm(r / "lm", TransformerLM(tiny(**SHRUNK)), b),
               "has per-layer sizes (shrunk: heads [2, 0], ffn [0, 7]) and factorized layers "
               "(layers.0.attention.q, layers.0.attention.v, layers.1.ffn.down), which "
               "espnet2's TransformerLM cannot hold; export the masked model"),
    "factorized": (lambda r, b: save_lm(r / "lm", TransformerLM(tiny(
        ranks={"layers.0.ffn.up": 4})), b), "has factorized layers (layers.0.ffn.up), which"),
    "eps": (lambda r, b: save_lm(r / "lm", TransformerLM(tiny(norm_eps=1e-5)), b),
            "LayerNorm eps 1e-05 (blocks)"),
    "upstream dir": (lambda r, b: _upstream(r), "a speech upstream"),
    "acoustic run folder": (lambda r, b: _run_folder(r), "is an acoustic run folder"),
    "missing": (lambda r, b: None, "does not exist"),
    "out is foreign": (lambda r, b: (save_lm(r / "lm", TransformerLM(tiny()), b),
                                     (r / "out" / "exp").mkdir(parents=True)),
                       "--out"),
}


@pytest.mark.parametrize("case", EXPORT_ERRORS)
def test_export_errors(case, tmp_path, bpe, cli):
    make, expected = EXPORT_ERRORS[case]
    make(tmp_path, bpe)
    message = one_line(cli("lm", "export", tmp_path / "lm", "--out", tmp_path / "out"))
    assert message.startswith("sprune lm: error: ") and expected in message, message
    assert not (tmp_path / "out" / CONFIG_FILE).exists()


def test_export_through_python_m(tmp_path, bpe):
    """`python -m sprune lm export` as a shell would run it: the same one-line error."""
    import subprocess
    import sys

    from conftest import checkout_env

    save_lm(tmp_path / "lm", TransformerLM(tiny(**SHRUNK)), bpe)
    done = subprocess.run([sys.executable, "-m", "sprune", "lm", "export", str(tmp_path / "lm"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=checkout_env(OMP_NUM_THREADS="1"), timeout=300)
    assert "per-layer sizes" in one_line(done)
