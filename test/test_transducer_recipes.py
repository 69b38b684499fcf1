"""The transducer recipes with LM fusion (egs/TEMPLATE/asr1/transducer.sh) at a tiny size:

* egs/kjv/asr1/run.sh after egs/kjv/lm1/run.sh (a fake `bible` reader, a tiny LM study):
  the held-out text spoken by split-owned voices, the LODR bigram, a tiny transducer, the
  decodings without an LM, with the dense LM (weights tuned on dev) and with every other LM,
  RESULTS.md with a row per LM and the plots; a re-run skips every finished stage.
* egs/librispeech/asr1/run_transducer.sh on a LibriSpeech / Libri-light fixture (no
  download) with a tiny LM trained on the fixture's transcripts: stages 1-5.
* the option errors of transducer.sh."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from test_asr_recipes import LIBRI_TEXTS, librispeech_fixture
from test_asr_recipes import recipe_copy as asr_recipe_copy
from test_asr_recipes import run
from test_asr_recipes import upstream  # noqa: F401  (the fixture: a tiny random upstream)
from test_lm_recipes import env as lm_env  # noqa: F401  (the fixture: fake bible on PATH)
from test_lm_recipes import recipe_copy as lm_recipe_copy
from test_lm_recipes import tiny_options

TINY_TRAIN = ("--set train.max_steps=3 --set train.batch_size=2 --set train.save_every=3 "
              "--set train.eval_every=3 --set eval_batch_size=4 --set train.device=cpu "
              "--set transducer.decoder_dim=16 --set transducer.joint_dim=16")
TINY_DATA = "--train-lines 6 --dev-lines 3 --test-lines 3 --max-words 6 --jobs 1"


def test_kjv_asr_after_the_lm_study_then_skips(tmp_path, lm_env, upstream):  # noqa: F811
    lm = lm_recipe_copy(tmp_path, "kjv")
    done = run(lm, lm_env, "--tag", "tiny", "--text-opts", "--dev 0.15 --test 0.15",
               "--criteria", "magnitude taylor", "--schedules", "one-shot",
               "--methods", "unstructured", *tiny_options("9000"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    asr = tmp_path / "egs" / "kjv" / "asr1"
    asr.mkdir()
    for entry in (Path(__file__).resolve().parents[1] / "egs" / "kjv" / "asr1").iterdir():
        if entry.name not in ("data", "exp"):
            (asr / entry.name).symlink_to(entry.resolve())
    args = ["--lm-tag", "tiny", "--bpe-size", "60", "--upstream", upstream, "--train-opts",
            TINY_TRAIN, "--local-data-opts", TINY_DATA, "--beam", "2", "--lm-weights",
            "0.1 0.5", "--lodr-weights", "0 0.2", "--length-bonuses", "0 1", "--nj", "2"]
    done = run(asr, lm_env, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    speakers = {split: {line.split()[1] for line in
                        (asr / "data" / split / "utt2spk").read_text().splitlines()}
                for split in ("train", "dev", "test")}
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["dev"]
    tests = {line.split(maxsplit=1)[1] for line in
             (asr / "data" / "test" / "text").read_text().splitlines()}
    assert tests <= set((lm / "data" / "kjv" / "test.txt").read_text().splitlines())
    run_dir = asr / "exp" / "kjv" / "dense"
    assert (asr / "data" / "lodr.2gram").is_file()
    lm_runs = sorted(p.parent.name for p in (lm / "exp" / "tiny").glob("*/outcome.json"))
    assert lm_runs == ["dense", "scratch_9k", "unstructured_magnitude_one-shot_9k",
                       "unstructured_taylor_one-shot_9k"]
    dense = json.loads((run_dir / "decode_lm_dense" / "result.json").read_text())
    assert len(dense["tuning"]) == 8 and dense["beam"] == 2     # 2 LM x 2 LODR x 2 bonuses
    keys = ("lm_weight", "lodr_weight", "length_bonus")
    for name in lm_runs:
        result = json.loads((run_dir / f"decode_lm_{name}" / "result.json").read_text())
        assert [result[k] for k in keys] == [dense[k] for k in keys]   # --tune-each false
    for name in ("greedy", "nolm"):
        assert (run_dir / f"decode_{name}" / "result.json").is_file()
    results = (run_dir / "RESULTS.md").read_text()
    for name in lm_runs:
        assert f"| {name} |" in results, name
    assert "without an LM: test WER" in results and "with the dense LM" in results
    for png in ("wer_vs_params.png", "wer_vs_flops.png"):
        assert (run_dir / png).stat().st_size > 1000 and f"]({png})" in results
    with open(run_dir / "results.csv") as f:
        assert sorted(r["lm_run"] for r in csv.DictReader(f)) == lm_runs

    stamps = {p: p.stat().st_mtime for p in run_dir.glob("decode_*/result.json")}
    again = run(asr, lm_env, *args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for words in ("stage 2: data/lodr.2gram is newer", "stage 3: exp/kjv/dense finished before",
                  "decode_nolm is up to date", "decode_lm_dense is up to date",
                  "stage 6: every LM was decoded before"):
        assert words in again.stdout, (words, again.stdout)
    assert {p: p.stat().st_mtime for p in run_dir.glob("decode_*/result.json")} == stamps


def test_librispeech_transducer_on_a_fixture(tmp_path, lm_env, upstream):  # noqa: F811
    from sprune.cli import main

    base = tmp_path / "my corpora"
    librispeech_fixture(base, ("dev-other", "test-other"))
    texts = LIBRI_TEXTS
    lm_text = tmp_path / "lm_text"
    lm_text.mkdir()
    (lm_text / "train.txt").write_text("\n".join(texts * 20) + "\n")
    (lm_text / "dev.txt").write_text("\n".join(texts) + "\n")
    bpe = tmp_path / "bpe" / "bpe.model"
    assert main(["lm", "bpe", "--text", str(lm_text / "train.txt"), "--vocab-size", "30",
                 "--out", str(bpe), "--quiet"]) == 0
    lm_exp = tmp_path / "lm_exp"
    tiny_lm = ["--set", "model.embed_dim=8", "--set", "model.d_model=16", "--set",
               "model.ffn_dim=16", "--set", "model.layers=1", "--set", "train.max_steps=2",
               "--set", "train.batch_size=4", "--set", "train.device=cpu"]
    config = Path(__file__).resolve().parents[1] / "conf" / "lm" / "train.yaml"
    assert main(["lm", "train", "--config", str(config), "--text", str(lm_text), "--bpe",
                 str(bpe), "--out", str(lm_exp / "dense"), *tiny_lm]) == 0
    recipe = asr_recipe_copy(tmp_path, "librispeech")
    common = ["--split", "10min", "--librispeech-root", base, "--librilight-root", base,
              "--upstream", upstream, "--stop-stage", "5", "--",
              "--bpe", bpe, "--lm-exp", lm_exp, "--train-opts", TINY_TRAIN, "--beam", "2",
              "--lm-weights", "0.2 0.4"]
    done = run(recipe, lm_env, *common, script="./run_transducer.sh")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = recipe / "exp" / "transducer_10min" / "dense"
    result = json.loads((run_dir / "decode_lm_dense" / "result.json").read_text())
    assert result["lm_weight"] in (0.2, 0.4) and set(result["test"]) == {"test_other"}
    assert (run_dir / "bpe.model").read_bytes() == bpe.read_bytes()
    bad = run(recipe, lm_env, "--split", "5h", "--upstream", upstream,
              script="./run_transducer.sh")
    assert bad.returncode == 2 and "unknown --split '5h'" in bad.stderr


@pytest.mark.parametrize("args, words", [
    (["--beam", "0"], "--beam must be a positive integer"),
    (["--tune-each", "maybe"], "it takes true or false"),
    (["--bpe", ""], "--bpe is empty"),
    (["--train-config", "conf/nope.yaml"], "config conf/nope.yaml not found"),
])
def test_transducer_sh_option_errors(tmp_path, lm_env, args, words):  # noqa: F811
    asr = tmp_path / "egs" / "kjv" / "asr1"
    asr.mkdir(parents=True)
    repo = Path(__file__).resolve().parents[1]
    for entry in (repo / "egs" / "kjv" / "asr1").iterdir():
        if entry.name not in ("data", "exp"):
            (asr / entry.name).symlink_to(entry.resolve())
    (tmp_path / "utils").symlink_to(repo / "utils")
    (tmp_path / "egs" / "TEMPLATE").symlink_to(repo / "egs" / "TEMPLATE")
    done = run(asr, lm_env, *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
