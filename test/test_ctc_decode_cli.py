"""`sprune lm arpa`, `sprune lexicon` and `sprune decode` on a tiny CTC run in-process:
greedy, flashlight beam, lexicon + KenLM n-gram with the weight grid tuned on dev, a sprune
LM, the report table, and the one-line errors (exit 2) of bad lexicons and n-gram files."""
from __future__ import annotations

import json

import pytest
import torch

from sprune.upstream import UpstreamModel, save_upstream, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FT = ("task: ctc\nupstream: {upstream}\nctc: {{units: char}}\n"
      "train: {{max_steps: 2, batch_size: 4, lr: 1.0e-3, eval_every: 2, save_every: 2, "
      "device: cpu}}\neval_batch_size: 8\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny random upstream, train/dev/test dirs with transcripts, a finished CTC run, its
    word 3-gram and lexicon."""
    from conftest import build_data_dir
    from sprune.cli import main

    root = tmp_path_factory.mktemp("ctc_decode")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "upstream")
    for name in ("train", "dev", "test"):
        build_data_dir(root, n_utts=4, name=name, seconds=(0.5, 0.6), with_intent=False)
    (root / "ft.yaml").write_text(FT.format(upstream=root / "upstream"))
    run = root / "exp" / "dense"
    assert main(["prune", "--config", str(root / "ft.yaml"), "--method", "dense", "--train",
                 str(root / "train"), "--dev", str(root / "dev"), "--out", str(run)]) == 0
    assert main(["lm", "arpa", "--data", str(root / "train"), "--order", "3",
                 "--out", str(root / "lm" / "3gram.arpa")]) == 0
    assert main(["lexicon", str(run), "--data", str(root / "train"),
                 "--out", str(root / "lm" / "lexicon.txt")]) == 0
    return root


def one_line_error(done, message):
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_arpa_and_lexicon_files(workspace):
    arpa = (workspace / "lm" / "3gram.arpa").read_text()
    assert "ngram 3=" in arpa and "\\3-grams:" in arpa
    train_words = {w.lower() for line in (workspace / "train" / "text").read_text().splitlines()
                   for w in line.split()[1:]}
    lexicon = (workspace / "lm" / "lexicon.txt").read_text().splitlines()
    assert {line.split()[0] for line in lexicon} == train_words
    assert all(line.split()[1:] == list(line.split()[0]) for line in lexicon)


def test_greedy_beam_and_ngram_decoding_with_a_tuned_grid(workspace, cli):
    run = workspace / "exp" / "dense"
    report = workspace / "RESULTS.md"
    report.write_text("# Results\n\nother tables\n")
    done = cli("decode", run, "--test", workspace / "test", "--decoder", "greedy")
    assert done.returncode == 0, done.stderr
    done = cli("decode", run, "--test", workspace / "test", "--beam", "4")
    assert done.returncode == 0, done.stderr
    done = cli("decode", run, "--dev", workspace / "dev", "--test", workspace / "test",
               "--beam", "4", "--lexicon", workspace / "lm" / "lexicon.txt",
               "--kenlm", workspace / "lm" / "3gram.arpa", "--lm-weight", "0,1",
               "--word-score=-1,1", "--report", report, "--report-note", "tiny run")
    assert done.returncode == 0, done.stderr
    doc = json.loads((run / "decode_beam4_lex_kenlm-3gram" / "result.json").read_text())
    assert doc["task"] == "ctc" and doc["decoder"] == "flashlight" and doc["beam"] == 4
    assert [(r["lm_weight"], r["word_score"]) for r in doc["tuning"]] == \
        [(0, -1), (0, 1), (1, -1), (1, 1)]
    best = min(doc["tuning"], key=lambda r: r["wer"])
    assert (doc["lm_weight"], doc["word_score"]) == (best["lm_weight"], best["word_score"])
    assert set(doc["test"]["test"]) >= {"wer", "cer", "rtf", "utterances"}
    hyps = (run / "decode_beam4_lex_kenlm-3gram" / "hyp_test.txt").read_text().splitlines()
    lexicon = {line.split()[0] for line in (workspace / "lm" / "lexicon.txt").read_text()
               .splitlines()}
    assert len(hyps) == 4 and all(w in lexicon for h in hyps for w in h.split()[1:])
    text = report.read_text()
    assert text.startswith("# Results\n\nother tables\n") and "tiny run" in text
    assert "| greedy | greedy |" in text and "| beam4 | flashlight | 4 | no |" in text
    assert "| beam4_lex_kenlm-3gram | flashlight | 4 | yes | 3gram.arpa |" in text
    # a second report replaces the section instead of adding one
    assert cli("decode", run, "--test", workspace / "test", "--decoder", "greedy",
               "--report", report).returncode == 0
    assert report.read_text().count("## CTC decoding") == 1


def test_decoding_with_a_sprune_lm(workspace, cli, tmp_path):
    from sprune.lm.checkpoint import save_lm
    from sprune.lm.config import LMConfig
    from sprune.lm.model import TransformerLM
    from sprune.lm.vocab import LMVocab

    lines = [line.split(maxsplit=1)[1] for line in
             (workspace / "train" / "text").read_text().splitlines()]
    vocab = LMVocab.train(lines * 3, vocab_size=30)
    vocab.save(tmp_path / "bpe.model")
    model = TransformerLM(LMConfig(vocab_size=vocab.vocab_size, embed_dim=16, d_model=16,
                                   heads=2, ffn_dim=32, layers=1))
    save_lm(tmp_path / "lm", model, tmp_path / "bpe.model")
    run = workspace / "exp" / "dense"
    done = cli("decode", run, "--test", workspace / "test", "--beam", "4", "--lexicon",
               workspace / "lm" / "lexicon.txt", "--lm", tmp_path / "lm", "--lm-weight", "0.5")
    assert done.returncode == 0, done.stderr
    doc = json.loads((run / "decode_beam4_lex_lm-lm" / "result.json").read_text())
    assert doc["lm"] == str(tmp_path / "lm") and doc["lm_weight"] == 0.5


def test_lexicon_free_decoding_with_a_unit_ngram(workspace, cli):
    """`sprune lm arpa --units RUN` counts the run's characters (`|` between words); the
    lexicon-free search takes it without --lexicon and tunes its weight on dev CER."""
    run = workspace / "exp" / "dense"
    arpa = workspace / "lm" / "char4.arpa"
    done = cli("lm", "arpa", "--data", workspace / "train", "--units", run, "--order", "4",
               "--out", arpa)
    assert done.returncode == 0, done.stderr
    unigrams = arpa.read_text().split("\\1-grams:\n")[1].split("\n\n")[0].splitlines()
    units = {line.split("\t")[1] for line in unigrams}
    vocab = json.loads((run / "tokenizer.json").read_text())["vocab"]
    assert "|" in units and units - {"<s>", "</s>", "<unk>"} <= set(vocab)
    done = cli("decode", run, "--dev", workspace / "dev", "--test", workspace / "test",
               "--beam", "4", "--kenlm", arpa, "--lm-weight", "0,0.5", "--tune-on", "cer")
    assert done.returncode == 0, done.stderr
    doc = json.loads((run / "decode_beam4_kenlm-char4" / "result.json").read_text())
    assert doc["tune_on"] == "cer" and doc["lexicon"] is None
    best = min(doc["tuning"], key=lambda r: r["cer"])
    assert doc["lm_weight"] == best["lm_weight"]
    # the same search as the run's evaluation decoder (ctc.kenlm / ctc.lm_weight)
    done = cli("evaluate", run, "--data", workspace / "test", "--name", "test_clm",
               "--decoder", "beam", "--beam", "4", "--kenlm", arpa, "--lm-weight",
               str(doc["lm_weight"]))
    assert done.returncode == 0, done.stderr
    scores = json.loads((run / "eval_test_clm.json").read_text())
    assert scores["cer"] == pytest.approx(doc["test"]["test"]["cer"])
    one_line_error(cli("evaluate", run, "--data", workspace / "test", "--kenlm", arpa),
                   "set ctc.decoder: beam or drop ctc.kenlm")
    one_line_error(cli("evaluate", run, "--data", workspace / "test", "--decoder", "beam",
                       "--kenlm", workspace / "lm" / "missing.arpa"),
                   "missing.arpa does not exist")


def test_bad_inputs_are_one_line_and_exit_2(workspace, cli, tmp_path):
    run = workspace / "exp" / "dense"
    test = workspace / "test"
    lexicon = workspace / "lm" / "lexicon.txt"
    bad = tmp_path / "lexicon.txt"
    first = lexicon.read_text().splitlines()[0]
    bad.write_text(f"{first}\nomega Ω m e g a\n", encoding="utf-8")
    one_line_error(cli("decode", run, "--test", test, "--lexicon", bad),
                   f"lexicon {bad} line 2: unit 'Ω' of word 'omega' is not one of the model's")
    one_line_error(cli("decode", run, "--test", test, "--lexicon", lexicon, "--kenlm",
                       tmp_path / "missing.arpa"), "missing.arpa does not exist")
    corrupt = tmp_path / "corrupt.arpa"
    corrupt.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\thello\n")
    one_line_error(cli("decode", run, "--test", test, "--lexicon", lexicon, "--kenlm", corrupt),
                   "corrupt.arpa is not a readable ARPA or KenLM binary file (KenLM: ")
    one_line_error(cli("decode", run, "--test", test, "--kenlm", workspace / "lm" / "3gram.arpa"),
                   "has words that are not units of the model")
    one_line_error(cli("decode", run, "--test", test, "--lodr", "x.2gram"),
                   "apply to transducer runs")
    one_line_error(cli("decode", run, "--test", test, "--decoder", "espnet"),
                   "--decoder espnet decodes transducer runs")
    one_line_error(cli("decode", run, "--test", test, "--lm-weight", "0.5,1",
                       "--lexicon", lexicon, "--kenlm", workspace / "lm" / "3gram.arpa"),
                   "no --dev to choose among them")
    one_line_error(cli("lm", "arpa", "--data", tmp_path, "--out", tmp_path / "x.arpa"),
                   "text is missing")
    one_line_error(cli("lexicon", tmp_path, "--data", test, "--out", tmp_path / "l.txt"),
                   "is not a run folder")
