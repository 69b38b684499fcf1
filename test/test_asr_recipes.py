"""The CTC ASR recipes through their run.sh on tiny fixtures laid out like the real corpora:
egs/commonvoice/asr1 (data, phonemize, dense, OMP, evaluation, results, mask transfer with
--mask-from) and egs/librispeech/asr1 (data, dense, evaluation), with a tiny random upstream
and a few updates; egs/mini_minds/asr1/run.sh's whole study at a tiny size (its default
study is too long for a test: README gives its run); and the option errors of the shared
egs/TEMPLATE/asr1/asr.sh and of the mini run.sh."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from sprune.upstream import UpstreamModel, save_upstream, tiny_config

REPO = Path(__file__).resolve().parents[1]
SHORT = "--set train.max_steps=2 --set train.batch_size=2 --set train.save_every=2 " \
        "--set train.eval_every=2 --set eval_batch_size=2 --set train.device=cpu"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    path = tmp_path_factory.mktemp("up") / "tiny"
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), path)
    return path


def recipe_copy(tmp_path: Path, corpus: str) -> Path:
    """egs/<corpus>/asr1 as a scratch recipe at the same depth (its links still resolve):
    every file linked, so exp/ and data/ are written into the scratch folder."""
    src = REPO / "egs" / corpus / "asr1"
    dst = tmp_path / "egs" / corpus / "asr1"
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name not in ("data", "exp"):
            (dst / entry.name).symlink_to(entry.resolve())
    (tmp_path / "utils").symlink_to(REPO / "utils")
    (tmp_path / "egs" / "TEMPLATE").symlink_to(REPO / "egs" / "TEMPLATE")
    return dst


def run(recipe: Path, env: dict, *args, script: str = "./run.sh"):
    return subprocess.run([script, *map(str, args)], cwd=recipe, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def env(sprune_on_path, tmp_path):
    return {**sprune_on_path, "SPRUNE_VENV": str(tmp_path / "no-venv")}


def test_commonvoice_recipe_h2l_then_mask_transfer(tmp_path, env, upstream):
    from test_prep_commonvoice import write_release

    root = write_release(tmp_path / "my corpora" / "cv", "nl", per_split=4, seconds=1.5)  # a space
    recipe = recipe_copy(tmp_path, "commonvoice")
    base = ["--lang", "nl", "--cv-root", root, "--setting", "h2l", "--upstream", upstream,
            "--methods", "omp", "--sparsities", "0.5", "--nj", "2", "--threads", "1",
            "--prune-opts", SHORT]
    done = run(recipe, env, *base, "--stop-stage", "6")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = recipe / "data" / "nl"
    assert (data / "train" / "text.phones").is_file()        # conf/lang/nl.conf: voice nl
    assert len((data / "train" / "wav.scp").read_text().splitlines()) == 4
    exp = recipe / "exp" / "h2l_nl"
    for name in ("dense", "omp_s0.5"):
        scores = json.loads((exp / name / "eval_test.json").read_text())
        assert {"per", "wer", "per/nl"} <= set(scores)
    assert json.loads((exp / "omp_s0.5" / "experiment.json").read_text())["data"][
        "train_langs"] == ["nl"]
    # a re-run finds every stage done
    again = run(recipe, env, *base, "--stage", "3", "--stop-stage", "6")
    assert again.returncode == 0 and "finished before" in again.stdout
    assert "stage 6: decode" not in again.stdout
    # mask transfer: PARP started from the OMP mask of exp/h2l_nl
    done = run(recipe, env, *base[:-6], "--methods", "parp", "--sparsities", "0.5",
               "--prune-opts", SHORT, "--mask-from", "exp/h2l_nl", "--tag", "h2l_nl_to_nl",
               "--stage", "5")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    xfer = recipe / "exp" / "h2l_nl_to_nl"
    source = json.loads((xfer / "parp_s0.5" / "experiment.json").read_text())["mask_source"]
    assert source["method"] == "omp" and source["train_langs"] == ["nl"]
    assert (xfer / "RESULTS.md").is_file() and (xfer / "analysis" / "ANALYSIS.md").is_file()


def test_commonvoice_recipe_option_errors(tmp_path, env):
    recipe = recipe_copy(tmp_path, "commonvoice")
    assert run(recipe, env, "--help").returncode == 0
    for args, words in ((["--lang", "xx"], "no conf/lang/xx.conf"),
                        (["--setting", "lsr", "--upstream", "u"], "h2l or csr"),
                        (["--upstream", "u"], "--cv-root"),
                        ([], "--upstream")):
        done = run(recipe, env, *args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1


def write_chapter(tree: Path, speaker: int, chapter: int, words: list[str]) -> None:
    """LibriSpeech's <speaker>/<chapter>/ with one 1.2 s FLAC per transcript."""
    folder = tree / str(speaker) / str(chapter)
    folder.mkdir(parents=True)
    lines = []
    for n, text in enumerate(words):
        utt = f"{speaker}-{chapter}-{n:04d}"
        t = np.arange(19200) / 16000
        soundfile.write(folder / f"{utt}.flac", (0.3 * np.sin(2 * np.pi * (200 + 50 * n) * t))
                        .astype(np.float32), 16000, format="FLAC")
        lines.append(f"{utt} {text}\n")
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))


LIBRI_TEXTS = ["HE HOPED", "THERE WOULD BE", "STEW FOR DINNER"]


def librispeech_fixture(base: Path, splits: tuple[str, str]) -> None:
    """LibriSpeech <splits> (one chapter each) and Libri-light's 1h/ folds under `base`."""
    for split, speaker in zip(splits, (1, 2)):
        write_chapter(base / "LibriSpeech" / split, speaker, 10, LIBRI_TEXTS)
    for fold in range(6):
        for kind, speaker, lines in (("clean", 100, LIBRI_TEXTS[:2]),
                                     ("other", 200, LIBRI_TEXTS[2:])):
            write_chapter(base / "librispeech_finetuning" / "1h" / str(fold) / kind,
                          speaker + fold, 20, lines)


def test_librispeech_recipe_10min(tmp_path, env, upstream):
    base = tmp_path / "my corpora"   # a space: run.sh must quote the paths it hands asr.sh
    librispeech_fixture(base, ("dev-other", "test-clean"))
    recipe = recipe_copy(tmp_path, "librispeech")
    common = ["--split", "10min", "--librispeech-root", base, "--librilight-root", base,
              "--upstream", upstream, "--test-sets", "test-clean", "--prune-opts", SHORT]
    done = run(recipe, env, *common, "--stop-stage", "3")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len((recipe / "data" / "train_10min" / "text").read_text().splitlines()) == 3
    done = run(recipe, env, *common, "--stage", "6", "--stop-stage", "6")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    scores = json.loads((recipe / "exp" / "finetune_10min" / "dense" / "eval_test_clean.json")
                        .read_text())
    assert {"wer", "cer"} <= set(scores)
    bad = run(recipe, env, "--split", "5h", "--upstream", upstream)
    assert bad.returncode == 2 and "unknown --split '5h'" in bad.stderr


@pytest.mark.parametrize("args, words", [
    (["--nj", "0"], "--nj must be a positive integer"),
    (["--methods", "lasso"], "conf/prune_lasso.yaml not found"),
    (["--phonemize", "maybe"], "auto, true or false"),
    (["--mask-from", "exp", "--methods", "imp"], "method 'imp' finds its own masks"),
    (["--finetune-config", "conf/nope.yaml"], "conf/nope.yaml not found"),
    (["--colour", "red"], "unknown option '--colour'"),
])
def test_asr_sh_option_errors(tmp_path, env, args, words):
    recipe = recipe_copy(tmp_path, "librispeech")
    (recipe / "exp").mkdir()
    done = run(recipe, env, "--finetune-config", "conf/finetune_1h.yaml", *args,
               script="./asr.sh")
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_mini_asr_run_sh_options(tmp_path, env):
    recipe = recipe_copy(tmp_path, "mini_minds")
    (tmp_path / "egs" / "mini_minds" / "ic1").symlink_to(REPO / "egs" / "mini_minds" / "ic1")
    done = run(recipe, env, "--help")
    assert done.returncode == 0 and "--curve-langs LIST" in done.stdout
    done = run(recipe, env, "--curve-langs", "nl-NL")
    assert done.returncode == 2 and "nl-NL is not in --langs" in done.stderr


def test_mini_asr_run_sh_tiny_study_writes_the_report(tmp_path, env, upstream):
    # The whole mini study at a tiny size: two languages, two methods at one sparsity, two
    # updates per run, a tiny random upstream for both settings; stages 1-7 (stage 7: the
    # decoding tables of both languages' dense runs, neural LMs trained for 2 updates).
    recipe = recipe_copy(tmp_path, "mini_minds")
    (tmp_path / "egs" / "mini_minds" / "ic1").symlink_to(REPO / "egs" / "mini_minds" / "ic1")
    done = run(recipe, env, "--langs", "en-US,fr-FR", "--curve-langs", "en-US",
               "--csr-langs", "fr-FR", "--methods", "omp parp", "--sparsities", "0.5",
               "--synth-opts", "--speakers 3 --phrasings 1 --speakers-per-phrasing 1,1,1",
               "--lsr-upstream", upstream, "--csr-upstream", upstream, "--prune-opts", SHORT,
               "--decode-opts", "--lm-steps 2 --lm-weights 0,1 --word-scores 0 "
               "--neural-word-scores 0 --unit-order 3 --unit-lm-weights 0,0.5")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    exp = recipe / "exp"
    en = exp / "tiny_hubert_en"
    for run_dir in ("en-US/dense", "en-US/omp_s0.5", "en-US/parp_s0.5", "fr-FR/omp_s0.5",
                    "transfer/en-US_to_fr-FR/omp_s0.5", "transfer/en-US_to_fr-FR/parp_s0.5",
                    "transfer/fr-FR_to_fr-FR/parp_s0.5", "joint/omp_s0.5"):
        assert (en / run_dir / "eval_test.json").is_file(), run_dir
    assert not (en / "transfer" / "fr-FR_to_fr-FR" / "omp_s0.5").exists()  # the baseline is fr-FR's
    assert (exp / "tiny_hubert_all" / "fr-FR" / "omp_s0.5" / "mask").is_dir()
    report = (exp / "RESULTS.md").read_text()
    assert report.startswith("# Mini ASR study")
    assert "\n## tiny_hubert_en\n" in report and "\n## tiny_hubert_all\n" in report
    for section in ("(a) Pruning curves", "(b) IOU of omp masks", "(c) Cross-lingual",
                    "(e) PARP"):
        assert section in report
    links = re.findall(r"\]\(([^)]+\.(?:png|csv))\)", report)
    assert links and all((exp / link).is_file() for link in links)
    decoding = report.split("## CTC decoding")[1]
    for name in ("greedy", "beam16", "beam16_lexicon", "beam16_3gram", "beam16_unit3gram",
                 "beam16_neural_lm"):
        assert f"| {name} |" in decoding, name
        assert (en / "en-US" / "dense" / f"decode_{name}" / "result.json").is_file(), name
    assert report.count("## CTC decoding") == 2            # one table per language
    assert (en / "fr-FR" / "dense" / "decode_beam16_unit3gram" / "result.json").is_file()
    tuned = json.loads((en / "en-US" / "dense" / "decode_beam16_unit3gram" / "result.json")
                       .read_text())
    assert tuned["tune_on"] == "cer" and tuned["lexicon"] is None
    assert [row["lm_weight"] for row in tuned["tuning"]] == [0, 0.5]
