"""CTC experiments through `sprune prune / evaluate / results` in-process: char, BPE and
phone units (phone transcripts from `sprune phonemize`), the tokenizer saved in the run folder,
per-language error rates, mask transfer with --mask-from (hard mask and PARP), and the
one-line errors of bad input."""
from __future__ import annotations

import json

import pytest
import torch

from sprune.data.datadir import DataDir
from sprune.prune.mask import Mask
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

FT = ("task: ctc\nupstream: {upstream}\nctc: {{units: {units}, vocab_size: 24}}\n"
      "train: {{max_steps: 4, batch_size: 4, lr: 1.0e-3, eval_every: 4, save_every: 4, "
      "device: cpu}}\neval_batch_size: 8\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny random upstream, train/dev/test dirs (en-US + fr-FR, transcripts) and configs."""
    from conftest import build_data_dir

    root = tmp_path_factory.mktemp("ctc_exp")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "upstream")
    for name in ("train", "dev", "test"):
        build_data_dir(root, n_utts=8, langs=("en-US", "fr-FR"), name=name, seconds=(0.6, 0.7),
                       with_intent=False)
    for units in ("char", "phone", "bpe"):
        (root / f"ft_{units}.yaml").write_text(FT.format(upstream=root / "upstream", units=units))
    return root


def prune_args(root, out, method, units="char", *extra, train="train"):
    return ["prune", "--config", root / f"ft_{units}.yaml", "--method", method,
            "--train", root / train, "--dev", root / "dev", "--out", root / "exp" / out, *extra]


def assert_one_line_error(done, message):
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_char_dense_omp_evaluate_results(workspace, cli):
    root = workspace
    assert cli(*prune_args(root, "dense", "dense")).returncode == 0
    done = cli(*prune_args(root, "omp_s0.5", "omp", "char", "--sparsity", "0.5",
                           "--dense", root / "exp" / "dense"))
    assert done.returncode == 0, done.stderr
    run = root / "exp" / "omp_s0.5"
    doc = json.loads((run / "experiment.json").read_text())
    assert doc["config"]["task"] == "ctc" and doc["tokenizer"] == "tokenizer.json"
    assert doc["data"]["train_langs"] == ["en-US", "fr-FR"]
    assert doc["config"]["train"]["metric"] == "wer"          # the default for char units
    vocab = json.loads((run / "tokenizer.json").read_text())["vocab"]
    train_chars = {c for line in (root / "train" / "text").read_text().splitlines()
                   for c in line.split(maxsplit=1)[1].replace(" ", "")}
    assert vocab[:2] == ["<blank>", "|"] and set(vocab[2:]) == train_chars
    outcome = json.loads((run / "outcome.json").read_text())
    assert set(outcome["dev"]) == {"wer", "cer", "wer/en-US", "wer/fr-FR", "cer/en-US",
                                   "cer/fr-FR"}
    assert outcome["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    for name in ("dense", "omp_s0.5"):
        done = cli("evaluate", root / "exp" / name, "--data", root / "test", "--name", "test")
        assert done.returncode == 0, done.stderr
    evals = json.loads((run / "eval_test.json").read_text())
    assert set(evals) == set(outcome["dev"]) and all(v >= 0 for v in evals.values())
    done = cli("evaluate", run, "--data", root / "test", "--name", "beam", "--decoder", "beam",
               "--beam", "4")
    assert done.returncode == 0, done.stderr
    assert set(json.loads((run / "eval_beam.json").read_text())) == set(evals)
    done = cli("results", root / "exp")          # metric inferred: wer
    assert done.returncode == 0, done.stderr
    table = (root / "exp" / "RESULTS.md").read_text()
    assert "test wer %" in table and "Lower wer is better" in table
    assert "| omp_s0.5 | omp | 50.0 | 50.0 |" in table
    assert (root / "exp" / "wer_vs_sparsity.png").stat().st_size > 1000
    done = cli("results", root / "exp", "--metric", "cer/fr-FR")
    assert done.returncode == 0 and "test cer/fr-FR %" in (root / "exp" / "RESULTS.md").read_text()


def test_bpe_units_save_the_sentencepiece_model(workspace, cli):
    root = workspace
    done = cli(*prune_args(root, "bpe_dense", "dense", "bpe"))
    assert done.returncode == 0, done.stderr
    doc = json.loads((root / "exp" / "bpe_dense" / "experiment.json").read_text())
    assert doc["tokenizer"] == "tokenizer.model" and doc["vocab_size"] == 24
    done = cli("evaluate", root / "exp" / "bpe_dense", "--data", root / "test", "--name", "test")
    assert done.returncode == 0, done.stderr


def test_phone_units_read_text_phones(workspace, cli, tmp_path):
    from conftest import build_data_dir

    root = workspace
    done = cli(*prune_args(root, "phone_missing", "dense", "phone"))
    assert_one_line_error(done, "text.phones is missing")
    done = cli("phonemize", root / "train", root / "dev", root / "test")
    assert done.returncode == 0, done.stderr
    train = DataDir.load(root / "train")
    phones = dict(line.split(" ", 1) for line in
                  (root / "train" / "text.phones").read_text().splitlines())
    assert set(phones) == set(train.wav_scp)
    fr = next(u for u in train.utt_ids if train.utt2lang[u] == "fr-FR")
    assert train.text[fr].startswith("two") and phones[fr] != train.text[fr]
    assert "ˈ" in phones[fr] or any(ord(c) > 127 for c in phones[fr])   # IPA, not letters
    done = cli(*prune_args(root, "phone_dense", "dense", "phone"))
    assert done.returncode == 0, done.stderr
    outcome = json.loads((root / "exp" / "phone_dense" / "outcome.json").read_text())
    assert {"per", "wer", "per/en-US", "per/fr-FR"} <= set(outcome["dev"])
    doc = json.loads((root / "exp" / "phone_dense" / "experiment.json").read_text())
    assert doc["config"]["train"]["metric"] == "per"
    # a dir without utt2lang needs --voice; an unknown language needs --lang-voice
    bare = build_data_dir(tmp_path, n_utts=2, name="bare", with_intent=False)
    (bare / "utt2lang").unlink()
    assert_one_line_error(cli("phonemize", bare), "pass --voice")
    assert cli("phonemize", bare, "--voice", "en-us").returncode == 0
    odd = build_data_dir(tmp_path, n_utts=2, langs=("xx-YY",), name="odd", with_intent=False)
    assert_one_line_error(cli("phonemize", odd), "--lang-voice xx-YY=<voice>")
    assert cli("phonemize", odd, "--lang-voice", "xx-YY=en-us").returncode == 0


def test_mask_transfer_with_mask_from(workspace, cli):
    """An OMP mask 'from another language' fine-tuned with a hard mask and as PARP's start."""
    root = workspace
    source = root / "exp" / "src_omp"
    assert cli(*prune_args(root, "dense", "dense")).returncode == 0
    done = cli(*prune_args(root, "src_omp", "omp", "char", "--sparsity", "0.5", "--dense",
                           root / "exp" / "dense", "--no-retrain"))
    assert done.returncode == 0, done.stderr
    given = Mask.load(source / "mask")
    done = cli(*prune_args(root, "xfer_omp", "omp", "char", "--sparsity", "0.5",
                           "--mask-from", source))
    assert done.returncode == 0, done.stderr
    run = root / "exp" / "xfer_omp"
    assert Mask.load(run / "mask") == given
    doc = json.loads((run / "experiment.json").read_text())
    assert doc["mask_source"]["run"] == str(source.resolve())
    assert doc["mask_source"]["method"] == "omp" and doc["mask_source"]["sparsity"] == 0.5
    assert doc["mask_source"]["train_langs"] == ["en-US", "fr-FR"]
    prune = json.loads((run / "prune.json").read_text())
    assert prune["mask_from"] == str((source / "mask").resolve())
    outcome = json.loads((run / "outcome.json").read_text())
    assert outcome["extra"]["mask_from"] == str((source / "mask").resolve())
    assert outcome["passes"] == pytest.approx(4 * 4 / 8)     # no dense run counted
    done = cli(*prune_args(root, "xfer_parp", "parp", "char", "--sparsity", "0.5",
                           "--mask-from", source / "mask"))
    assert done.returncode == 0, done.stderr
    assert Mask.load(root / "exp" / "xfer_parp" / "initial_mask") == given
    # PARP-P starts at the given mask's sparsity and prunes on to the target
    done = cli(*prune_args(root, "xfer_parp-p", "parp-p", "char", "--sparsity", "0.7",
                           "--mask-from", source))
    assert done.returncode == 0, done.stderr
    outcome = json.loads((root / "exp" / "xfer_parp-p" / "outcome.json").read_text())
    assert outcome["extra"]["initial_sparsity"] == pytest.approx(given.sparsity())
    assert outcome["achieved_sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert Mask.load(root / "exp" / "xfer_parp-p" / "initial_mask") == given
    # the mask's sparsity must be the one asked for; IMP and dense find their own masks
    assert_one_line_error(cli(*prune_args(root, "bad_s", "omp", "char", "--sparsity", "0.7",
                                          "--mask-from", source)), "has sparsity 0.5000")
    assert_one_line_error(cli(*prune_args(root, "bad_imp", "imp", "char", "--mask-from", source)),
                          "method 'imp' finds its own masks")
    assert_one_line_error(cli(*prune_args(root, "bad_path", "omp", "char", "--mask-from",
                                          root / "nowhere")), "no mask there")


@pytest.mark.parametrize("case, message", [
    ("oov", "symbols 'z' (U+007A) are not in the char vocabulary"),
    ("short", "audio too short for its transcript under CTC"),
    ("empty_dev", "no utterances to decode"),
    ("metric", "train.metric 'accuracy' is not reported for ctc units 'char'"),
    ("mode", "set metric_mode: min"),
])
def test_bad_input_is_one_line_and_exit_2(workspace, cli, tmp_path, case, message):
    from conftest import build_data_dir
    from sprune.data.tokenizer import CharTokenizer

    root = workspace
    config = root / "ft_char.yaml"
    args = {"train": root / "train", "dev": root / "dev"}
    if case == "oov":    # a given vocabulary (e.g. a joint one) that lacks a training letter
        CharTokenizer.build(["one two three four five six seven eight nine ten"]).save(
            tmp_path / "vocab.json")
        bad = DataDir.load(root / "train")
        first = bad.utt_ids[0]
        bad.text[first] = "zero one"
        bad.save(tmp_path / "train")
        args["train"] = tmp_path / "train"
        config = tmp_path / "ft.yaml"
        config.write_text(FT.format(upstream=root / "upstream", units="char").replace(
            "vocab_size: 24}", f"vocab_size: 24, tokenizer: {tmp_path / 'vocab.json'}}}"))
        message = f"train/text:1 ({first}): char " + message
    elif case == "short":
        args["train"] = build_data_dir(tmp_path, n_utts=4, name="short", seconds=0.1,
                                       with_intent=False)
    elif case == "empty_dev":
        (tmp_path / "empty").mkdir()
        for name in ("wav.scp", "utt2spk", "text"):
            (tmp_path / "empty" / name).write_text("")
        args["dev"] = tmp_path / "empty"
    else:
        config = tmp_path / "ft.yaml"
        key = "metric: accuracy" if case == "metric" else "metric_mode: max"
        config.write_text(FT.format(upstream=root / "upstream", units="char")
                          .replace("device: cpu", f"device: cpu, {key}"))
    done = cli("prune", "--config", config, "--method", "dense", "--train", args["train"],
               "--dev", args["dev"], "--out", tmp_path / "run")
    assert_one_line_error(done, message)
    assert not (tmp_path / "run" / "outcome.json").exists()


def test_evaluate_on_an_empty_decoding_set_is_one_line(workspace, cli, tmp_path):
    root = workspace
    if not (root / "exp" / "dense" / "final").is_dir():
        assert cli(*prune_args(root, "dense", "dense")).returncode == 0
    (tmp_path / "empty").mkdir()
    for name in ("wav.scp", "utt2spk", "text"):
        (tmp_path / "empty" / name).write_text("")
    done = cli("evaluate", root / "exp" / "dense", "--data", tmp_path / "empty")
    assert_one_line_error(done, "no utterances to evaluate")
    assert not (root / "exp" / "dense" / "eval_empty.json").exists()
