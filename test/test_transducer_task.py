"""The transducer task: the RNN-T loss against a hand-written forward recursion, training on a
tiny upstream, and `sprune prune / evaluate` runs with BPE units shared with an LM."""
from __future__ import annotations

import json

import pytest
import torch

from sprune.tasks.transducer import TransducerConfig, TransducerModel, rnnt_loss_sum
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

FT = ("task: transducer\nupstream: {upstream}\ntransducer: {{{extra}decoder_dim: 16, "
      "joint_dim: 16}}\ntrain: {{max_steps: 4, batch_size: 4, lr: 1.0e-3, eval_every: 4, "
      "save_every: 4, device: cpu}}\neval_batch_size: 8\n")


def hand_rnnt_loss(logits: torch.Tensor, target: list[int]) -> float:
    """-log P(target) of one utterance by the transducer forward variables:
    alpha(t, u) = alpha(t-1, u) P(blank | t-1, u) + alpha(t, u-1) P(y_u | t, u-1)."""
    logp = logits.log_softmax(-1).double()
    frames, labels = logp.shape[0], len(target)
    alpha = torch.full((frames, labels + 1), float("-inf"), dtype=torch.double)
    alpha[0, 0] = 0.0
    for t in range(frames):
        for u in range(labels + 1):
            terms = []
            if t > 0:
                terms.append(alpha[t - 1, u] + logp[t - 1, u, 0])
            if u > 0:
                terms.append(alpha[t, u - 1] + logp[t, u - 1, target[u - 1]])
            if terms:
                alpha[t, u] = torch.stack(terms).logsumexp(0)
    return float(-(alpha[frames - 1, labels] + logp[frames - 1, labels, 0]))


def test_rnnt_loss_equals_the_forward_recursion():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=generator)
    targets = torch.tensor([[3, 1, 5], [2, 2, 0]])
    frames, lengths = torch.tensor([5, 4]), torch.tensor([3, 2])
    expected = (hand_rnnt_loss(logits[0], [3, 1, 5])
                + hand_rnnt_loss(logits[1, :4, :3], [2, 2]))
    assert float(rnnt_loss_sum(logits, targets, frames, lengths)) == pytest.approx(expected, rel=1e-5)


def test_transducer_overfits_one_batch():
    torch.manual_seed(0)
    upstream = UpstreamModel(tiny_config("wav2vec2"))
    config = TransducerConfig(decoder_dim=16, joint_dim=16, dropout=0.0, decoder_dropout=0.0,
                              decoder_embed_dropout=0.0)
    model = TransducerModel(upstream, upstream.config.embed_dim, 9, config)
    batch = {"wavs": torch.randn(2, 8000) * 0.1, "lengths": torch.tensor([8000, 6000]),
             "targets": torch.tensor([[3, 4, 5], [6, 7, 0]]), "target_lengths": torch.tensor([3, 2])}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = model(batch)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    names = {n for g in model.optimizer_groups(0.01) if g.get("lr_scale") for p in g["params"]
             for n, q in model.named_parameters() if q is p}
    assert names and all(n.startswith(("decoder.", "joint.")) for n in names)


def test_auxiliary_ctc_and_frame_stacking():
    """loss = RNN-T + w x CTC (each per label) on stacked frames: T' = ceil(T / k)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    upstream = UpstreamModel(tiny_config("wav2vec2"))
    config = TransducerConfig(decoder_dim=8, joint_dim=8, dropout=0.0, ctc_weight=0.5,
                              stack_frames=3)
    model = TransducerModel(upstream, upstream.config.embed_dim, 9, config).eval()
    batch = {"wavs": torch.randn(2, 8000) * 0.1, "lengths": torch.tensor([8000, 6000]),
             "targets": torch.tensor([[3, 4], [6, 0]]), "target_lengths": torch.tensor([2, 1])}
    with torch.no_grad():
        out = model(batch)
        enc, frames = model.encode(batch["wavs"], batch["lengths"])
        plain = upstream(batch["wavs"], batch["lengths"])
        assert enc.shape[-1] == 3 * upstream.config.embed_dim
        assert frames.tolist() == [-(-int(n) // 3) for n in plain.lengths]
        assert torch.equal(enc[0, 0], plain.hidden_states[-1][0, :3].flatten())
        rnnt = rnnt_loss_sum(model.logits(enc, batch["targets"]), batch["targets"], frames,
                             batch["target_lengths"]) / 3
        ctc = F.ctc_loss(model.ctc_head(enc).log_softmax(-1).transpose(0, 1), batch["targets"],
                         frames, batch["target_lengths"], reduction="sum") / 3
    assert float(out["rnnt_loss"]) == pytest.approx(float(rnnt), rel=1e-5)
    assert float(out["ctc_loss"]) == pytest.approx(float(ctc), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(rnnt + 0.5 * ctc), rel=1e-5)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny random upstream, en-US train/dev/test dirs, an LM BPE model and configs."""
    from conftest import build_data_dir

    from sprune.lm.vocab import LMVocab

    root = tmp_path_factory.mktemp("transducer_exp")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "upstream")
    for name in ("train", "dev", "test"):
        build_data_dir(root, n_utts=8, langs=("en-US",), name=name, seconds=(0.6, 0.7),
                       with_intent=False)
    lines = [line.split(maxsplit=1)[1] for line in (root / "train" / "text").read_text().splitlines()]
    LMVocab.train(lines * 3, 40).save(root / "bpe.model")
    (root / "ft.yaml").write_text(FT.format(upstream=root / "upstream", extra=""))
    (root / "ft_lm_bpe.yaml").write_text(FT.format(upstream=root / "upstream",
                                                   extra=f"bpe: {root / 'bpe.model'}, "))
    return root


def prune_args(root, out, method, config="ft.yaml", *extra):
    return ["prune", "--config", root / config, "--method", method, "--train", root / "train",
            "--dev", root / "dev", "--out", root / "exp" / out, *extra]


def test_dense_and_omp_runs_evaluate(workspace, cli):
    root = workspace
    done = cli(*prune_args(root, "dense", "dense", "ft_lm_bpe.yaml"))
    assert done.returncode == 0, done.stderr
    done = cli(*prune_args(root, "omp_s0.5", "omp", "ft_lm_bpe.yaml", "--sparsity", "0.5",
                           "--dense", root / "exp" / "dense"))
    assert done.returncode == 0, done.stderr
    run = root / "exp" / "omp_s0.5"
    doc = json.loads((run / "experiment.json").read_text())
    assert doc["config"]["task"] == "transducer" and doc["bpe"] == "bpe.model"
    assert doc["vocab_size"] == 40
    # the run keeps the LM's BPE model byte for byte: LM and transducer ids agree
    assert (run / "bpe.model").read_bytes() == (root / "bpe.model").read_bytes()
    outcome = json.loads((run / "outcome.json").read_text())
    assert set(outcome["dev"]) == {"wer", "cer", "wer/en-US", "cer/en-US"}
    assert outcome["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    done = cli("evaluate", run, "--data", root / "test", "--name", "test", "--beam", "3")
    assert done.returncode == 0, done.stderr
    assert set(json.loads((run / "eval_test.json").read_text())) == set(outcome["dev"])


def test_bpe_trained_on_the_transcripts_without_an_lm(workspace, cli):
    root = workspace
    done = cli(*prune_args(root, "dense_own_bpe", "dense", "ft.yaml",
                           "--set", "transducer.vocab_size=30"))
    assert done.returncode == 0, done.stderr
    doc = json.loads((root / "exp" / "dense_own_bpe" / "experiment.json").read_text())
    assert doc["vocab_size"] == 30


def test_transcript_outside_the_bpe_is_one_line(workspace, cli, tmp_path):
    from sprune.lm.vocab import LMVocab

    root = workspace
    LMVocab.train(["abc abd bca"] * 5, 12).save(tmp_path / "small.model")
    done = cli(*prune_args(root, "bad", "dense", "ft_lm_bpe.yaml",
                           "--set", f"transducer.bpe={tmp_path / 'small.model'}"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "train/text:1" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def decoded_run(workspace):
    """The dense run of `test_dense_and_omp_runs_evaluate` (trained here if needed), a tiny
    random LM on its BPE model, another on a different one, and a LODR bigram."""
    from sprune.cli import main
    from sprune.lm.checkpoint import save_lm
    from sprune.lm.config import LMConfig
    from sprune.lm.model import TransformerLM
    from sprune.lm.vocab import LMVocab

    root = workspace
    run = root / "exp" / "dense"
    if not (run / "final").is_dir():
        assert main([str(a) for a in prune_args(root, "dense", "dense", "ft_lm_bpe.yaml")]) == 0
    torch.manual_seed(0)
    config = LMConfig(vocab_size=40, embed_dim=8, d_model=8, heads=2, ffn_dim=8, layers=1)
    save_lm(root / "lm", TransformerLM(config), vocab=root / "bpe.model")
    LMVocab.train(["zz yy xx"] * 3 + ["a b c d e f g h i j k l m n o p q r s t u v w"] * 3,
                  40).save(root / "other.model")
    save_lm(root / "lm_other", TransformerLM(config), vocab=root / "other.model")
    assert main(["lm", "ngram", "--data", str(root / "train"), "--bpe", str(run / "bpe.model"),
                 "--out", str(root / "lodr.2gram"), "--arpa", str(root / "lodr.arpa")]) == 0
    assert "\\2-grams:" in (root / "lodr.arpa").read_text()
    return root, run


def test_decode_tunes_weights_on_dev_and_writes_results(decoded_run, cli):
    root, run = decoded_run
    done = cli("decode", run, "--dev", root / "dev", "--test", root / "test", "--beam", "2",
               "--lm", root / "lm", "--lm-weight", "0,0.5", "--lodr", root / "lodr.2gram",
               "--lodr-weight", "0,0.2", "--length-bonus", "0,1", "--name", "grid")
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "decode_grid" / "result.json").read_text())
    assert [(r["lm_weight"], r["lodr_weight"], r["length_bonus"]) for r in result["tuning"]] == [
        (w, lodr, bonus) for w in (0.0, 0.5) for lodr in (0.0, 0.2) for bonus in (0.0, 1.0)]
    best = min(result["tuning"], key=lambda r: r["wer"])
    assert (result["lm_weight"], result["lodr_weight"], result["length_bonus"]) == \
        (best["lm_weight"], best["lodr_weight"], best["length_bonus"])
    assert {"wer", "cer", "rtf"} <= set(result["test"]["test"])
    hyps = (run / "decode_grid" / "hyp_test.txt").read_text().splitlines()
    assert len(hyps) == len((root / "test" / "text").read_text().splitlines())
    done = cli("decode", run, "--test", root / "test", "--decoder", "espnet", "--beam", "1")
    assert done.returncode == 0, done.stderr
    espnet = json.loads((run / "decode_espnet_beam1" / "result.json").read_text())
    done = cli("decode", run, "--test", root / "test", "--beam", "1")
    assert done.returncode == 0, done.stderr
    ours = json.loads((run / "decode_sprune_beam1" / "result.json").read_text())
    assert ours["test"]["test"]["wer"] == espnet["test"]["test"]["wer"]   # greedy agrees
    assert (run / "decode_sprune_beam1" / "hyp_test.txt").read_text() == \
        (run / "decode_espnet_beam1" / "hyp_test.txt").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--lm", "{root}/lm_other", "--lm-weight", "0.3"], "was trained with another BPE model"),
    (["--lm", "{root}/upstream", "--lm-weight", "0.3"], "upstream"),
    (["--beam", "0"], "--beam must be at least 1"),
    (["--lm", "{root}/lm", "--lm-weight", "heavy"], "is not a comma-separated list of numbers"),
    (["--lm", "{root}/lm", "--lm-weight", "0.2,nan"], "give finite numbers"),
    (["--lm-weight", "0.1,0.2", "--lm", "{root}/lm"], "no --dev"),
    (["--decoder", "espnet", "--lodr", "{root}/lodr.2gram", "--lodr-weight", "0.1"],
     "--decoder sprune only"),
])
def test_decode_bad_input_is_one_line(decoded_run, cli, capsys, extra, message):
    root, run = decoded_run
    try:
        done = cli("decode", run, "--test", root / "test", *[e.format(root=root) for e in extra])
        code, stderr = done.returncode, done.stderr
    except SystemExit as stop:   # argparse's own errors leave through SystemExit in-process
        code, stderr = stop.code, capsys.readouterr().err
    assert code == 2, stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


def test_a_relative_upstream_is_saved_absolute(workspace, cli, monkeypatch):
    """A run trained from a recipe folder with a relative upstream path is decoded later
    from anywhere: experiment.json holds the absolute path."""
    root = workspace
    monkeypatch.chdir(root)
    done = cli(*prune_args(root, "relative", "dense", "ft_lm_bpe.yaml", "--upstream", "upstream",
                           "--set", "train.max_steps=1"))
    assert done.returncode == 0, done.stderr
    doc = json.loads((root / "exp" / "relative" / "experiment.json").read_text())
    assert doc["upstream"] == str(root / "upstream")
    monkeypatch.chdir(root / "exp")
    done = cli("decode", root / "exp" / "relative", "--test", root / "test", "--beam", "1")
    assert done.returncode == 0, done.stderr


def test_killed_run_resumes_to_the_uninterrupted_result(workspace, cli, monkeypatch):
    """A PARP transducer run killed after update 3 (checkpoint at 2) resumes to the same mask
    and weights as a run that was never stopped."""
    from safetensors.torch import load_file

    from sprune.prune.methods.callbacks import RepruneCallback
    from sprune.prune.mask import Mask

    root = workspace
    extra = ("--sparsity", "0.5", "--set", "train.save_every=2")
    assert cli(*prune_args(root, "parp_full", "parp", "ft_lm_bpe.yaml", *extra)).returncode == 0
    original = RepruneCallback.on_step_end

    def killed_at_3(self, trainer):
        if trainer.step == 3:
            raise KeyboardInterrupt
        original(self, trainer)

    monkeypatch.setattr(RepruneCallback, "on_step_end", killed_at_3)
    killed = cli(*prune_args(root, "parp_killed", "parp", "ft_lm_bpe.yaml", *extra))
    assert killed.returncode == 130 and not (root / "exp" / "parp_killed" / "final").exists()
    monkeypatch.undo()
    resumed = cli(*prune_args(root, "parp_killed", "parp", "ft_lm_bpe.yaml", *extra))
    assert resumed.returncode == 0, resumed.stderr
    full, again = root / "exp" / "parp_full", root / "exp" / "parp_killed"
    records = [json.loads(line) for line in (again / "finetune" / "log.jsonl").open()]
    assert any(r["event"] == "resume" and r["step"] == 2 for r in records)
    assert Mask.load(full / "mask") == Mask.load(again / "mask")
    a = load_file(str(full / "final" / "tensors.safetensors"))
    b = load_file(str(again / "final" / "tensors.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_shrunk_upstream_is_the_encoder(workspace, cli, tmp_path):
    """The physically smaller upstream of structured pruning (paper 004) trains and decodes
    as a transducer encoder."""
    from sprune.structured.masked import MaskedUpstream
    from sprune.structured.shrink_from_masks import shrink_masked
    from sprune.structured.structures import Structures
    from sprune.upstream import load_upstream

    root = workspace
    masked = MaskedUpstream(load_upstream(str(root / "upstream"))[0], Structures()).eval()
    with torch.no_grad():   # half of layer 0's FFN units and one of layer 1's vo dims off
        masked.gates.gate("layers.0.ffn_units").log_alpha[:32] = -10.0
        masked.gates.gate("layers.1.vo").log_alpha[2] = -10.0
    save_upstream(shrink_masked(masked), tmp_path / "shrunk")
    run = root / "exp" / "dense_on_shrunk"
    done = cli(*prune_args(root, "dense_on_shrunk", "dense", "ft_lm_bpe.yaml", "--upstream",
                           tmp_path / "shrunk"))
    assert done.returncode == 0, done.stderr
    sizes = [sum(p.numel() for p in load_upstream(str(path))[0].parameters())
             for path in (tmp_path / "shrunk", root / "upstream")]
    assert sizes[0] < sizes[1]
    done = cli("decode", run, "--test", root / "test", "--beam", "2")
    assert done.returncode == 0, done.stderr


def test_regroup_joins_length_sorted_batches_with_zero_padding():
    from sprune.tasks.transducer import EncodedBatch, regroup

    def batch(indices, frames):
        enc = torch.randn(len(indices), max(frames), 3)
        return EncodedBatch(indices, enc, torch.tensor(frames), [f"u{i}" for i in indices],
                            [None] * len(indices), ["x"] * len(indices))

    items = [batch([4, 0], [2, 3]), batch([1, 3], [4, 5]), batch([2], [6])]
    groups = list(regroup(items, 3))
    assert [g.indices for g in groups] == [[4, 0], [1, 3, 2]]
    joined = groups[1]
    assert joined.enc.shape == (3, 6, 3) and joined.frames.tolist() == [4, 5, 6]
    assert torch.equal(joined.enc[:2, :5], items[1].enc) and not joined.enc[:2, 5].any()
    assert joined.utts == ["u1", "u3", "u2"]
    assert [g.indices for g in regroup(items, 0)] == [i.indices for i in items]
    assert [g.indices for g in regroup(items, 1)] == [i.indices for i in items]
