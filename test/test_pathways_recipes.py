"""egs/mini_mls/asr1 (the shared egs/TEMPLATE/asr1/pathways.sh) end to end on tiny fixtures:
two languages, two seeds, one sparsity, a tiny random upstream and a few updates per run:
data joined, dense, IMP and adaptive per language, ASR Pathways and Dynamic ASR Pathways
from IMP masks and from LAP, RESULTS.md; finished runs skipped on a re-run; option errors."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO_ROOT, build_data_dir
from test_asr_recipes import SHORT, recipe_copy, run, upstream  # noqa: F401 (fixture)

LANGS = ("en-US", "fr-FR")


@pytest.fixture
def env(sprune_on_path, tmp_path):
    return {**sprune_on_path, "SPRUNE_VENV": str(tmp_path / "no-venv")}


def tiny_recipe(tmp_path):
    """The recipe with fixture data dirs (local/data.sh does nothing) and its prune configs
    shortened to rounds of 2 updates."""
    recipe = recipe_copy(tmp_path, "mini_mls")
    (tmp_path / "conf").symlink_to(REPO_ROOT / "conf")   # the shared bases of conf/
    for name in ("local", "conf"):
        (recipe / name).unlink()
        shutil.copytree(REPO_ROOT / "egs" / "mini_mls" / "asr1" / name, recipe / name)
    (recipe / "local" / "data.sh").write_text("#!/bin/sh\nexit 0\n")
    for conf in ("prune_adaptive.yaml", "prune_dynamic_ls.yaml"):
        path = recipe / "conf" / conf
        path.write_text(path.read_text().replace("round_steps: 20", "round_steps: 2")
                        .replace("adapt_at: 10", "adapt_at: 1")
                        .replace("round_steps: 80", "round_steps: 2")
                        .replace("adapt_at: 40", "adapt_at: 1"))
    for lang in LANGS:
        for split in ("train", "dev", "test"):
            build_data_dir(recipe / "data" / lang, n_utts=4, langs=(lang,), name=split,
                           seconds=(0.6, 0.7), with_intent=False)
    return recipe


def test_tiny_study_end_to_end_and_skip_on_rerun(tmp_path, env, upstream):  # noqa: F811
    recipe = tiny_recipe(tmp_path)
    args = ["--langs", " ".join(LANGS), "--seeds", "1 2", "--sparsities", "0.5",
            "--upstream", upstream, "--prune-opts", SHORT, "--dense-threads", "1"]
    done = run(recipe, env, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = recipe / "exp" / "mini"
    assert json.loads((exp / "dense" / "eval_test.json").read_text()).keys() >= {
        "cer/en-US", "cer/fr-FR"}
    for seed in (1, 2):
        level = exp / f"seed{seed}" / "s0.5"
        for method in ("imp", "adaptive"):
            for lang in LANGS:
                run_dir = level / method / lang
                assert (run_dir / "eval_test.json").is_file(), run_dir
                doc = json.loads((run_dir / "experiment.json").read_text())
                assert doc["init_from"] == str((exp / "dense").resolve())
                assert doc["data"]["train_langs"] == [lang]
        for method in ("pathways", "dynamic_ls", "dynamic_lap"):
            result = json.loads((level / method / "eval_test.json").read_text())
            assert {f"cer/{lang}" for lang in LANGS} <= set(result)
        config = (level / "dynamic_ls" / "prune_config.yaml").read_text()
        assert f"en-US: {(level / 'imp' / 'en-US' / 'mask').resolve()}" in config
        outcome = json.loads((level / "dynamic_lap" / "outcome.json").read_text())
        assert outcome["extra"]["initialisation"] == "LAP"
        assert [e["kind"] for e in outcome["extra"]["events"]] == ["adapt", "adapt"]
    # run.sh's unit n-gram: trained once, its weight tuned on dev with the dense model, the
    # dense model and every run decoded with it
    tuned = json.loads((exp / "dense" / "decode_unitlm" / "result.json").read_text())
    assert tuned["kenlm"].endswith("lm/unit6gram.arpa") and tuned["tune_on"] == "cer"
    assert (exp / "dense" / "eval_test_greedy.json").is_file()
    ctc = json.loads((exp / "seed1" / "s0.5" / "pathways" / "experiment.json").read_text())
    ctc = ctc["config"]["ctc"]
    assert (ctc["decoder"], ctc["lm_weight"]) == ("beam", tuned["lm_weight"])
    assert ctc["kenlm"] == str((exp / "lm" / "unit6gram.arpa").resolve())
    results = (exp / "RESULTS.md").read_text()
    assert "Decoding: flashlight beam search (beam 16, 8 units per frame)" in results
    assert ctc["beam_tokens"] == 8
    for method in ("imp", "adaptive", "pathways", "dynamic_ls", "dynamic_lap"):
        assert f"| {method} | 0.5 |" in results
    assert "± " in results and (exp / "cer_vs_sparsity.png").is_file()
    again = run(recipe, env, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stage 3:" not in again.stdout and "stage 5:" not in again.stdout
    assert "finished before" in again.stdout


@pytest.mark.parametrize("args, words", [
    (["--methods", "adaptive"], "adaptive starts from the IMP masks; add imp"),
    (["--methods", "imp lottery"], "unknown method 'lottery'"),
    (["--nj", "0"], "--nj must be a positive integer"),
])
def test_option_errors(tmp_path, env, args, words):
    recipe = recipe_copy(tmp_path, "mini_mls")
    done = run(recipe, env, *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_mls_recipe_data_dense_and_imp_on_a_fixture(tmp_path, env, upstream):  # noqa: F811
    """egs/mls/asr1: MLS fixture archives (Dutch FLAC, French Opus) -> data/<tag>/, the dense
    multilingual run and IMP per language (its per-language config)."""
    from test_prep_mls import build_language

    corpus = tmp_path / "mls"
    build_language(corpus, "dutch", first_seconds=1.0)   # CTC needs a frame per label
    build_language(corpus, "french", ext="opus", first_seconds=1.0)
    recipe = recipe_copy(tmp_path, "mls")
    (tmp_path / "conf").symlink_to(REPO_ROOT / "conf")
    done = run(recipe, env, "--langs", "nl-NL fr-FR", "--train-name", "train_1h",
               "--local-data-opts", f"--mls-root {corpus} --langs nl,french --train-set 1h",
               "--seeds", "1", "--sparsities", "0.5", "--methods", "imp", "--stop-stage", "3",
               "--upstream", upstream, "--prune-opts", SHORT, "--dense-threads", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (recipe / "data" / "nl-NL").resolve() == (recipe / "data" / "nl").resolve()
    exp = recipe / "exp" / "mls"
    dense = json.loads((exp / "dense" / "eval_test.json").read_text())
    assert {"cer/nl-NL", "cer/fr-FR"} <= set(dense)
    for lang in ("nl-NL", "fr-FR"):
        run_dir = exp / "seed1" / "s0.5" / "imp" / lang
        assert (run_dir / "eval_test.json").is_file()
        # the language's own config: finetune_<lang>.yaml (before --prune-opts' overrides)
        assert (run_dir / "level1" / "mask").is_dir()
