"""sprune.lm.metrics (perplexity, parameters, FLOPs per token, latency) and `sprune lm eval`."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sprune.benchmark import FLOP_FORMULAS
from sprune.lm.checkpoint import save_lm
from sprune.lm.config import LMConfig
from sprune.lm.metrics import (count_parameters, flops_per_token, flops_per_token_nonzero,
                               linear_flops_per_token, perplexity, token_latency)
from sprune.lm.model import TransformerLM

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Every kind of block: full, fewer heads without FFN, no attention, a factorized FFN layer.
MIXED = dict(vocab_size=11, embed_dim=6, d_model=8, heads=2, ffn_dim=12, layers=3,
             layer_heads=[2, 1, 0], layer_ffn=[12, 0, 5], ranks={"layers.0.ffn.up": 3},
             dropout=0.0, attention_dropout=0.0)

LM_TEXT = ["the cat sat on the mat", "a dog ran in the park", "the sun is hot today",
           "we like green tea", "my cat likes the sun", "a bird sang in a tree"]


def fixed_lm(bias: list[float]) -> TransformerLM:
    """An LM whose every position predicts softmax(bias): the output weights are zero."""
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(vocab_size=len(bias), embed_dim=4, d_model=8, heads=2,
                                   ffn_dim=8, layers=1)).eval()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.copy_(torch.tensor(bias))
    return model


# -- perplexity ---------------------------------------------------------------------------------
def test_perplexity_matches_a_hand_computed_value() -> None:
    bias = [0.5, -1.0, 2.0, 0.3, 1.0]           # id 4 = <sos/eos>
    model = fixed_lm(bias)
    # "1 2" and "3": <sos> 1 2 <eos> predicts 1, 2, <eos>; <sos> 3 <eos> predicts 3, <eos>.
    sentences = [torch.tensor([4, 1, 2, 4]), torch.tensor([4, 3, 4])]
    log_z = math.log(sum(math.exp(b) for b in bias))
    logp = [b - log_z for b in bias]
    nll = -(logp[1] + logp[2] + logp[4] + logp[3] + logp[4])
    for batch_size in (1, 2, 32):
        result = perplexity(model, sentences, batch_size=batch_size)
        assert result["num_tokens"] == 5 and result["num_sentences"] == 2
        assert result["nll_per_token"] == pytest.approx(nll / 5, rel=1e-6)
        assert result["ppl"] == pytest.approx(math.exp(nll / 5), rel=1e-6)
    assert not model.training


def test_perplexity_counts_tokens_as_espnet_lm_calc_perplexity() -> None:
    """ESPnet's nll() (espnet2/bin/lm_calc_perplexity.py's model call) on the same LM gives
    the same NLL sum and the same token count: n + 1 per sentence of n tokens."""
    from espnet2.lm.abs_model import AbsLM
    from espnet2.lm.espnet_model import ESPnetLanguageModel

    torch.manual_seed(3)
    model = TransformerLM(LMConfig(vocab_size=9, embed_dim=4, d_model=8, heads=2, ffn_dim=8,
                                   layers=2)).eval()

    class AsEspnetLM(AbsLM):
        def forward(self, x: torch.Tensor, hidden: None) -> tuple[torch.Tensor, None]:
            return model.logits(x), None

    texts = [[1, 2, 3, 5], [6, 2], [7]]
    espnet = ESPnetLanguageModel(AsEspnetLM(), vocab_size=9, ignore_id=0).eval()
    padded = torch.zeros(3, 4, dtype=torch.long)
    for row, ids in enumerate(texts):
        padded[row, :len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        nll, counts = espnet.nll(padded, torch.tensor([len(t) for t in texts]))
    ours = perplexity(model, [torch.tensor([8, *t, 8]) for t in texts], batch_size=2)
    assert ours["num_tokens"] == int(counts.sum()) == (4 + 1) + (2 + 1) + (1 + 1)
    assert ours["ppl"] == pytest.approx(math.exp(float(nll.sum()) / int(counts.sum())),
                                        rel=1e-5)


def test_perplexity_on_a_sentence_dataset(tmp_path: Path) -> None:
    from sprune.lm.dataset import SentenceDataset

    vocab = tiny_vocab(tmp_path)
    dataset = SentenceDataset(LM_TEXT[:3] + ["", "the cat"], vocab)
    model = TransformerLM(LMConfig(vocab_size=vocab.vocab_size, embed_dim=4, d_model=8,
                                   heads=2, ffn_dim=8, layers=1))
    model.train()
    result = perplexity(model, dataset, batch_size=2)
    assert result["num_sentences"] == 4 and result["num_tokens"] == dataset.num_tokens()
    assert result["unk_tokens"] == 0 and math.isfinite(result["ppl"]) and result["ppl"] > 1
    assert model.training  # the mode is restored


# -- parameters ---------------------------------------------------------------------------------
def test_count_parameters_parts_add_up_and_nonzero_sees_masks() -> None:
    model = TransformerLM(LMConfig(**MIXED))
    with torch.no_grad():
        for param in model.parameters():                # no zeros yet (biases start at 0)
            param.uniform_(0.1, 1.0)
    counts = count_parameters(model)
    assert counts["total"] == model.num_parameters()
    assert counts["embedding"] == 11 * 6 and counts["output"] == 8 * 11 + 11
    assert counts["input"] == 6 * 8 + 8 + 2 * 8 and counts["final_norm"] == 2 * 8
    assert sum(counts[k] for k in ("embedding", "input", "blocks", "final_norm",
                                   "output")) == counts["total"]
    assert counts["nonzero"] == counts["total"] and counts["nonzero_blocks"] == counts["blocks"]
    with torch.no_grad():
        model.layers[0].attention.q.weight[:, :3] = 0   # 8 x 3 weights
        model.embed.weight[0] = 0                       # 6 weights
    counts = count_parameters(model)
    assert counts["nonzero"] == counts["total"] - 24 - 6
    assert counts["nonzero_blocks"] == counts["blocks"] - 24


# -- FLOPs --------------------------------------------------------------------------------------
def test_flops_per_token_hand_count() -> None:
    config = LMConfig(**MIXED)
    d, context = 4, 7                              # head size 8 / 2; 7 cached tokens
    keys = context + 1
    macs = (6 * 8                                  # input Linear embed_dim -> d_model
            + 3 * 8 * 8 + 8 * 8                    # block 0: q, k, v, out (2 heads x 4)
            + 2 * 2 * 4 * keys                     #   q k^T and weights @ v
            + 3 * (8 + 12) + 12 * 8                #   ffn up factorized at rank 3, down
            + 3 * 8 * 4 + 4 * 8                    # block 1: one head, no ffn
            + 2 * 1 * 4 * keys
            + 8 * 5 + 5 * 8                        # block 2: no attention, 5 ffn units
            + 8 * 11)                              # output layer
    assert flops_per_token(config, context=context) == 2 * macs
    assert flops_per_token(TransformerLM(config), context=context) == 2 * macs
    assert linear_flops_per_token(config) == 2 * (macs - 2 * 2 * d * keys - 2 * 1 * d * keys)


def test_flops_per_token_agrees_with_torch_flop_counter() -> None:
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(**MIXED)).eval()
    batch, context = 3, 5
    with torch.inference_mode():
        _, cache = model.step(torch.randint(0, 10, (batch, context)), model.init_cache(batch))
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
            model.step(torch.randint(0, 10, (batch, 1)), cache)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    linear = by_op.pop("aten.addmm", 0) + by_op.pop("aten.mm", 0)
    assert linear == batch * linear_flops_per_token(model)
    assert counter.get_total_flops() == batch * flops_per_token(model, context=context)


def test_flops_nonzero_is_theoretical_count_of_kept_weights() -> None:
    model = TransformerLM(LMConfig(**MIXED))
    dense = flops_per_token(model, context=4)
    assert flops_per_token_nonzero(model, context=4) == dense
    with torch.no_grad():
        model.layers[0].ffn.down.weight[:, :6] = 0              # 8 x 6 zeros
        model.layers[0].ffn.up.first.weight[0] = 0              # a rank component: 8 zeros
        model.embed.weight.zero_()                              # lookups cost nothing anyway
    assert flops_per_token(model, context=4) == dense           # dense kernels: same cost
    assert flops_per_token_nonzero(model, context=4) == dense - 2 * (48 + 8)


# -- latency ------------------------------------------------------------------------------------
def test_token_latency_is_positive_and_restores_threads() -> None:
    model = TransformerLM(LMConfig(**MIXED))
    model.train()
    torch.set_num_threads(2)
    result = token_latency(model, batch=2, context=6, steps=3, threads=1, repeats=3, warmup=1)
    assert torch.get_num_threads() == 2 and model.training
    assert math.isfinite(result["ms_per_token"]) and result["ms_per_token"] > 0
    assert result["ms_per_hypothesis_token"] == pytest.approx(result["ms_per_token"] / 2)
    assert len(result["repeat_ms"]) == 3 and all(t > 0 for t in result["repeat_ms"])
    assert (result["batch"], result["context"], result["threads"]) == (2, 6, 1)


def test_token_latency_restores_threads_on_error(monkeypatch) -> None:
    model = TransformerLM(LMConfig(**MIXED))
    before = torch.get_num_threads()

    def broken_step(*args, **kwargs):
        assert torch.get_num_threads() == 2
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "step", broken_step)
    with pytest.raises(RuntimeError, match="out of memory"):
        token_latency(model, batch=2, context=3, steps=1, threads=2)
    assert torch.get_num_threads() == before


# -- the command --------------------------------------------------------------------------------
def tiny_vocab(root: Path, size: int = 40, name: str = "bpe.model"):
    from sprune.lm.vocab import LMVocab

    vocab = LMVocab.train(LM_TEXT, size)
    vocab.save(root / name)
    return vocab


@pytest.fixture
def lm_setup(tmp_path: Path) -> dict[str, Path]:
    vocab = tiny_vocab(tmp_path)
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(vocab_size=vocab.vocab_size, embed_dim=4, d_model=8,
                                   heads=2, ffn_dim=8, layers=1))
    with torch.no_grad():
        for param in model.parameters():                # no zeros (biases start at 0)
            param.uniform_(0.05, 0.3)
    lm = save_lm(tmp_path / "lm", model, vocab=tmp_path / "bpe.model")
    text = tmp_path / "dev.txt"
    text.write_text("the cat sat\n\nA dog, in the park!\n", encoding="utf-8")
    return {"root": tmp_path, "lm": lm, "text": text}


def one_line_error(result) -> str:
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


def test_lm_eval_writes_json_and_table_and_reuses_it(cli, lm_setup, monkeypatch) -> None:
    lm, text = lm_setup["lm"], lm_setup["text"]
    result = cli("lm", "eval", lm, "--text", text, "--latency", "--latency-batch", "2",
                 "--latency-context", "4", "--latency-steps", "2", "--latency-repeats", "2")
    assert result.returncode == 0, result.stderr
    out = lm / "eval_dev.json"
    doc = json.loads(out.read_text())
    assert doc["num_sentences"] == 2 and doc["empty_lines"] == 1 and doc["text_lines"] == 3
    assert math.isfinite(doc["ppl"]) and doc["ppl"] > 1
    assert doc["parameters"]["nonzero"] == doc["parameters"]["total"]
    assert doc["flops_per_token"] == doc["flops_per_token_nonzero_theoretical"] > 0
    assert doc["flops_context"] == 4 and doc["latency"]["ms_per_token"] > 0
    assert doc["latency"]["settings"]["threads"] == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith(f"| {lm} |"))
    assert f"{doc['ppl']:.2f}" in row and f"{doc['parameters']['total']:,}" in row
    assert "written" in result.stdout

    # The same ppl as the library call on the same text.
    from sprune.lm.checkpoint import load_lm
    from sprune.lm.dataset import SentenceDataset
    from sprune.lm.vocab import LMVocab

    model, _ = load_lm(lm)
    dataset = SentenceDataset(text.read_text().splitlines(), LMVocab.load(lm / "bpe.model"))
    assert perplexity(model, dataset)["ppl"] == pytest.approx(doc["ppl"], rel=1e-6)

    short = ("--latency-context", "4")
    stamp = out.stat().st_mtime_ns
    again = cli("lm", "eval", lm, "--text", text, *short)
    assert again.returncode == 0 and "reused" in again.stdout and out.stat().st_mtime_ns == stamp
    assert f"| {lm} | {doc['ppl']:.2f}" in again.stdout
    # Other FLOPs / latency settings keep the perplexity and measure the rest.
    monkeypatch.setattr("sprune.lm.metrics.perplexity", None)   # would fail if called
    other = cli("lm", "eval", lm, "--text", text, "--latency", "--latency-batch", "1",
                "--latency-steps", "1", "--latency-repeats", "1")
    assert other.returncode == 0 and "perplexity reused" in other.stdout, other.stderr
    redone = json.loads(out.read_text())
    assert redone["latency"]["settings"]["batch"] == 1 and redone["flops_context"] == 50
    assert redone["ppl"] == doc["ppl"] and redone["flops_per_token"] > doc["flops_per_token"]
    monkeypatch.undo()
    forced = cli("lm", "eval", lm, "--text", text, "--force")
    assert forced.returncode == 0 and forced.stdout.count("written") == 1
    assert "perplexity reused" not in forced.stdout
    # A newer text is a reason to measure again.
    later = time.time() + 5
    os.utime(text, (later, later))
    newer = cli("lm", "eval", lm, "--text", text)
    assert "written" in newer.stdout and "reused" not in newer.stdout


def test_lm_eval_out_file_for_one_lm_and_several_lms(cli, lm_setup) -> None:
    root, lm, text = lm_setup["root"], lm_setup["lm"], lm_setup["text"]
    result = cli("lm", "eval", lm, "--text", text, "--out", root / "res" / "r.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((root / "res" / "r.json").read_text())["lm"] == str(lm)
    assert not (lm / "eval_dev.json").exists()

    from sprune.lm.checkpoint import load_lm

    model, _ = load_lm(lm)
    with torch.no_grad():
        model.layers[0].ffn.up.weight[:4] = 0                   # a masked copy: 4 x 8 zeros
    masked = save_lm(root / "masked", model, vocab=lm / "bpe.model")
    both = cli("lm", "eval", lm, masked, "--text", text)
    assert both.returncode == 0, both.stderr
    doc = json.loads((masked / "eval_dev.json").read_text())
    assert doc["parameters"]["nonzero"] == doc["parameters"]["total"] - 32
    assert doc["flops_per_token_nonzero_theoretical"] == doc["flops_per_token"] - 64
    assert f"| {masked} |" in both.stdout and f"| {lm} |" in both.stdout
    assert "--out" in one_line_error(cli("lm", "eval", lm, masked, "--text", text,
                                         "--out", root / "x.json"))


def test_lm_eval_mismatching_bpe_is_one_line(cli, lm_setup) -> None:
    root, lm, text = lm_setup["root"], lm_setup["lm"], lm_setup["text"]
    tiny_vocab(root, size=36, name="other.model")
    err = one_line_error(cli("lm", "eval", lm, "--text", text, "--bpe", root / "other.model"))
    assert "other.model" in err and "36" in err and str(lm) in err
    assert not (lm / "eval_dev.json").exists()


def test_lm_eval_refuses_acoustic_folders_in_one_line(cli, lm_setup) -> None:
    root, text = lm_setup["root"], lm_setup["text"]
    run_dir = root / "exp" / "dense"
    run_dir.mkdir(parents=True)
    (run_dir / "experiment.json").write_text("{}")
    assert "acoustic" in one_line_error(cli("lm", "eval", run_dir, "--text", text))
    upstream = root / "upstream"
    upstream.mkdir()
    (upstream / "config.json").write_text(json.dumps({"format": "sprune-upstream"}))
    assert "speech upstream" in one_line_error(cli("lm", "eval", upstream, "--text", text))
    # A bad folder after a good one fails before anything is measured.
    one_line_error(cli("lm", "eval", lm_setup["lm"], upstream, "--text", text))
    assert not (lm_setup["lm"] / "eval_dev.json").exists()


def test_lm_eval_bad_text_is_one_line(cli, lm_setup) -> None:
    root, lm = lm_setup["root"], lm_setup["lm"]
    empty = root / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert "no text" in one_line_error(cli("lm", "eval", lm, "--text", empty))
    latin = root / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert "UTF-8" in one_line_error(cli("lm", "eval", lm, "--text", latin))
    punct = root / "punct.txt"
    punct.write_text("!!!\n...\n", encoding="utf-8")
    assert "no sentence" in one_line_error(cli("lm", "eval", lm, "--text", punct))
    assert "no such file" in one_line_error(cli("lm", "eval", lm, "--text", root / "nope.txt"))
    assert "--batch-size" in one_line_error(cli("lm", "eval", lm, "--text", lm_setup["text"],
                                                "--batch-size", "0"))
