"""MINDS-14 prep on a tiny fixture laid out like the real release.

The fixture mirrors PolyAI's MInDS-14.zip: `MInDS-14/text/<lang>.csv` with the header
filepath,text_asr,text_translated_back,intent and `MInDS-14/audio/<lang>~<INTENT>/<id>.wav`
at 8 kHz (or, zipped, MInDS-14.zip holding MInDS-14/{audio.zip,text.zip,license.md}).
"""
from __future__ import annotations

import csv
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from sprune import cli
from sprune.data import minds14
from sprune.data.datadir import DataDir
from sprune.data.minds14 import (INTENTS, SUBSETS, TOP7, normalize_intent, prepare_minds14,
                                 speaker_disjoint_split, subset_languages)
from sprune.data.validate import count_errors, validate_data_dir
from sprune.errors import UserError

FIXTURE_LANGS = ("en-US", "en-GB", "en-AU", "fr-FR", "it-IT", "nl-NL", "de-DE", "pt-PT", "ko-KR")
PER_LANG = 5
SOURCE_SECONDS = 0.25
SOURCE_RATE = 8000


def _recording_id(lang_index: int, k: int) -> str:
    """A 24-hex-digit name like the real ones (e.g. 602ba55abb1e6d0fbce92065)."""
    return f"{0x602ba55a + lang_index:08x}{k:016x}"


def build_minds14(base: Path, langs=FIXTURE_LANGS, per_lang: int = PER_LANG,
                  empty_text_lang: str | None = "en-GB") -> Path:
    """Write `base/MInDS-14/{text,audio}` and return `base`.

    Utterance k of a language has intent INTENTS[(k * 3 + lang index) % 14]. One row of
    `empty_text_lang` has an empty transcript (prep must leave it out). The first en-US row
    has a quoted transcript with a comma.
    """
    rng = np.random.default_rng(0)
    folder = base / "MInDS-14"
    (folder / "text").mkdir(parents=True)
    for li, lang in enumerate(langs):
        rows = [["filepath", "text_asr", "text_translated_back", "intent"]]
        for k in range(per_lang):
            intent = INTENTS[(k * 3 + li) % len(INTENTS)]
            rel = f"{lang}~{intent.upper()}/{_recording_id(li, k)}.wav"
            wav_path = folder / "audio" / rel
            wav_path.parent.mkdir(parents=True, exist_ok=True)
            wav = 0.1 * rng.standard_normal(int(SOURCE_SECONDS * SOURCE_RATE))
            soundfile.write(wav_path, wav.astype(np.float32), SOURCE_RATE, subtype="PCM_16")
            text = f"{lang} request {k} about {intent.replace('_', ' ')}"
            if lang == "en-US" and k == 0:
                text = "hi, I want to change my address"
            if lang == empty_text_lang and k == per_lang - 1:
                text = ""
            rows.append([rel, text, f"back translation {k}", intent])
        with open(folder / "text" / f"{lang}.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
    (folder / "license.md").write_text("CC BY 4.0\n")
    return base


def zip_minds14(extracted: Path, zip_path: Path) -> Path:
    """Pack an extracted fixture the way the release is packed: zips inside a zip."""
    folder = extracted / "MInDS-14"
    inner = {}
    for part in ("audio", "text"):
        inner[part] = zip_path.parent / f"{part}.zip.tmp"
        with zipfile.ZipFile(inner[part], "w", zipfile.ZIP_DEFLATED) as z:
            for file in sorted((folder / part).rglob("*")):
                if file.is_file():
                    z.write(file, file.relative_to(folder / part).as_posix())
    with zipfile.ZipFile(zip_path, "w") as z:
        for part, path in inner.items():
            z.write(path, f"MInDS-14/{part}.zip")
            path.unlink()
        z.write(folder / "license.md", "MInDS-14/license.md")
    return zip_path


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return build_minds14(tmp_path_factory.mktemp("minds14_src"))


@pytest.fixture(scope="module")
def en_all(fixture_root, tmp_path_factory) -> tuple[Path, dict[str, DataDir]]:
    out = tmp_path_factory.mktemp("minds14_out")
    dirs = prepare_minds14(fixture_root, out, subset="en-ALL", seed=3, dev_frac=0.2,
                           test_frac=0.2, log=lambda _m: None)
    return out, dirs


def _dir_files(path: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in sorted(path.iterdir())}


# ----------------------------------------------------------------------------- names

def test_subsets_are_the_papers():
    assert subset_languages("en-US") == ("en-US",)
    assert set(subset_languages("en-ALL")) == {"en-US", "en-GB", "en-AU"}
    assert set(subset_languages("en-fr")) == {"en-US", "fr-FR"}
    assert set(subset_languages("top7")) == {"it-IT", "en-AU", "nl-NL", "de-DE", "pt-PT",
                                             "en-GB", "ko-KR"}
    assert len(subset_languages("all")) == 14
    assert subset_languages("pl-PL") == ("pl-PL",)
    with pytest.raises(UserError, match="unknown MINDS-14 subset 'en'"):
        subset_languages("en")


def test_intent_labels_follow_the_hub_class_order():
    assert len(INTENTS) == 14 and INTENTS[0] == "abroad" and INTENTS[13] == "pay_bill"
    assert normalize_intent("JOINT_ACCOUNT") == "joint_account"
    assert normalize_intent(" joint account") == "joint_account"
    assert normalize_intent("app-error") == "app_error"
    assert normalize_intent("11") == "joint_account"
    assert normalize_intent("0") == "abroad"
    assert normalize_intent("14") is None
    assert normalize_intent("mortgage") is None


# ----------------------------------------------------------------------------- splitting

def test_split_keeps_speakers_apart_and_covers_strata():
    # 40 speakers with 1-4 utterances each, in 4 strata.
    utt2spk, utt2stratum = {}, {}
    for s in range(40):
        for u in range(1 + s % 4):
            utt = f"spk{s:02d}-u{u}"
            utt2spk[utt] = f"spk{s:02d}"
            utt2stratum[utt] = f"stratum{s % 4}"
    splits = speaker_disjoint_split(utt2spk, utt2stratum, seed=1, dev_frac=0.1, test_frac=0.2)
    assert sorted(sum(splits.values(), [])) == sorted(utt2spk)
    speakers = {name: {utt2spk[u] for u in utts} for name, utts in splits.items()}
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    total = len(utt2spk)
    assert abs(len(splits["test"]) - 0.2 * total) <= 4   # at most one speaker over
    assert abs(len(splits["dev"]) - 0.1 * total) <= 4
    for name in ("train", "test"):
        assert {utt2stratum[u] for u in splits[name]} == {f"stratum{k}" for k in range(4)}
    assert splits == speaker_disjoint_split(utt2spk, utt2stratum, seed=1, dev_frac=0.1,
                                            test_frac=0.2)
    assert splits != speaker_disjoint_split(utt2spk, utt2stratum, seed=2, dev_frac=0.1,
                                            test_frac=0.2)


def test_split_gives_every_split_a_speaker_when_data_is_tiny():
    utt2spk = {f"u{i}": f"u{i}" for i in range(3)}
    splits = speaker_disjoint_split(utt2spk, {u: "x" for u in utt2spk}, seed=0)
    assert [len(splits[name]) for name in ("train", "dev", "test")] == [1, 1, 1]
    with pytest.raises(UserError, match="too few for a train/dev/test split"):
        speaker_disjoint_split({"a": "a", "b": "b"}, {"a": "x", "b": "x"}, seed=0)
    with pytest.raises(UserError, match="fractions"):
        speaker_disjoint_split(utt2spk, {u: "x" for u in utt2spk}, seed=0, dev_frac=0.5,
                               test_frac=0.5)


# ----------------------------------------------------------------------------- prep

def test_prep_writes_valid_16k_dirs_of_the_subset(en_all):
    out, dirs = en_all
    assert set(dirs) == {"train", "dev", "test"}
    all_utts = []
    for name, data in dirs.items():
        path = out / "en-ALL" / name
        problems = validate_data_dir(path)
        assert count_errors(problems) == 0, [str(p) for p in problems]
        loaded = DataDir.load(path)
        assert set(loaded.utt2lang.values()) <= {"en-US", "en-GB", "en-AU"}
        assert set(loaded.utt2intent.values()) <= set(INTENTS)
        for wav in loaded.wav_scp.values():
            info = soundfile.info(wav)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == 2 * int(SOURCE_SECONDS * SOURCE_RATE)
        all_utts += loaded.utt_ids
    # every language is used, the empty transcript of en-GB is left out
    assert len(all_utts) == len(set(all_utts)) == 3 * PER_LANG - 1
    assert {DataDir.load(out / "en-ALL" / n).utt2lang[u]
            for n in dirs for u in DataDir.load(out / "en-ALL" / n).utt_ids} == {
        "en-US", "en-GB", "en-AU"}


def test_prep_keeps_transcripts_intents_and_speakers_apart(en_all):
    out, dirs = en_all
    merged = DataDir.combine(dirs.values())
    first = minds14._safe_token(f"en-US_{INTENTS[0]}_{_recording_id(0, 0)}")
    assert merged.text[first] == "hi, I want to change my address"
    assert merged.utt2intent[first] == INTENTS[0]
    assert merged.utt2intent[f"en-AU_{INTENTS[2]}_{_recording_id(2, 0)}"] == INTENTS[2]
    speakers = [set(d.utt2spk.values()) for d in dirs.values()]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert sum(len(d) for d in dirs.values()) == 14
    assert len(dirs["test"]) == 3 and len(dirs["dev"]) == 3   # round(14 * 0.2)


def test_prep_is_deterministic_and_seeded(fixture_root, en_all, tmp_path):
    out, _ = en_all
    prepare_minds14(fixture_root, tmp_path / "same", subset="en-ALL", seed=3, dev_frac=0.2,
                    test_frac=0.2, log=lambda _m: None)
    for name in ("train", "dev", "test"):
        ours = _dir_files(tmp_path / "same" / "en-ALL" / name)
        theirs = _dir_files(out / "en-ALL" / name)
        for file in ("text", "utt2spk", "utt2lang", "utt2intent"):
            assert ours[file] == theirs[file]
    prepare_minds14(fixture_root, tmp_path / "other", subset="en-ALL", seed=4, dev_frac=0.2,
                    test_frac=0.2, log=lambda _m: None)
    assert (_dir_files(tmp_path / "other" / "en-ALL" / "test")["text"]
            != _dir_files(out / "en-ALL" / "test")["text"])


def test_top7_and_single_language_subsets(fixture_root, tmp_path):
    dirs = prepare_minds14(fixture_root, tmp_path, subset="top7", log=lambda _m: None)
    langs = {lang for d in dirs.values() for lang in d.utt2lang.values()}
    assert langs == set(TOP7)
    assert sum(len(d) for d in dirs.values()) == 7 * PER_LANG - 1   # en-GB's empty row
    # audio is resampled once per language and reused by the next subset
    stamp = (tmp_path / "audio" / "en-GB" / "MANIFEST").stat().st_mtime_ns
    dirs = prepare_minds14(fixture_root, tmp_path, subset="en-GB", log=lambda _m: None)
    assert (tmp_path / "audio" / "en-GB" / "MANIFEST").stat().st_mtime_ns == stamp
    assert {lang for d in dirs.values() for lang in d.utt2lang.values()} == {"en-GB"}


def test_prep_reads_the_release_zip(fixture_root, en_all, tmp_path):
    out, dirs = en_all
    zip_path = zip_minds14(fixture_root, tmp_path / "MInDS-14.zip")
    for root in (zip_path, tmp_path):   # the zip itself, or the folder holding it
        result = prepare_minds14(root, tmp_path / "out", subset="en-ALL", seed=3, dev_frac=0.2,
                                 test_frac=0.2, log=lambda _m: None)
        assert {n: d.utt_ids for n, d in result.items()} == {n: d.utt_ids for n, d in dirs.items()}
    assert (tmp_path / "out" / "downloads" / "MInDS-14" / "text" / "en-US.csv").is_file()
    assert (tmp_path / "out" / "downloads" / "MInDS-14" / "license.md").is_file()


# ----------------------------------------------------------------------------- bad input

def test_missing_or_wrong_root_names_the_expected_path(tmp_path):
    with pytest.raises(UserError, match=r"does not exist.*--minds14-root"):
        prepare_minds14(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no MINDS-14 under .*empty: expected .*MInDS-14/text"):
        prepare_minds14(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot open .*junk.zip as a zip"):
        prepare_minds14(tmp_path / "junk.zip", tmp_path / "out")


def test_missing_language_csv(tmp_path):
    build_minds14(tmp_path / "src", langs=("en-US",), empty_text_lang=None)
    with pytest.raises(UserError, match=r"fr-FR.csv not found"):
        prepare_minds14(tmp_path / "src", tmp_path / "out", subset="en-fr")
    assert not (tmp_path / "out" / "en-fr").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda rows: rows.__setitem__(0, ["path", "text_asr", "text_translated_back", "intent"]),
     r"en-US.csv:1: header lacks column 'filepath'"),
    (lambda rows: rows[2].__setitem__(3, "mortgage"), r"en-US.csv:3: unknown intent 'mortgage'"),
    (lambda rows: rows[3].__setitem__(0, "en-US~FREEZE/nothing.wav"),
     r"en-US.csv:4: audio .*nothing.wav is missing"),
    (lambda rows: rows.append(rows[1]), r"en-US.csv:7: recording .* is listed twice"),
])
def test_bad_csv_rows_are_named(tmp_path, damage, message):
    build_minds14(tmp_path / "src", langs=("en-US",), empty_text_lang=None)
    csv_path = tmp_path / "src" / "MInDS-14" / "text" / "en-US.csv"
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    damage(rows)
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(UserError, match=message):
        prepare_minds14(tmp_path / "src", tmp_path / "out")


# ----------------------------------------------------------------------------- CLI

def test_cli_builds_a_subset(fixture_root, tmp_path, sprune_cli):
    proc = sprune_cli("prep", "minds14", "--root", fixture_root, "--subset", "en-fr",
                      "--out", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert "en-US: 5 utterances" in proc.stdout
    langs = set()
    for name in ("train", "dev", "test"):
        langs |= set(DataDir.load(tmp_path / "data" / "en-fr" / name).utt2lang.values())
    assert langs == {"en-US", "fr-FR"}


def test_cli_bad_root_is_one_line_exit_2(tmp_path, sprune_cli):
    proc = sprune_cli("prep", "minds14", "--root", tmp_path / "missing", "--out", tmp_path / "d")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing does not exist" in lines[0]
    proc = sprune_cli("prep", "minds14", "--root", tmp_path, "--subset", "xx-XX")
    assert proc.returncode == 2 and "unknown MINDS-14 subset 'xx-XX'" in proc.stderr


def test_download_offline_fails_with_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    import requests

    calls = []

    def no_network(**kwargs):
        calls.append(kwargs)
        raise requests.exceptions.ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    status = cli.main(["prep", "minds14", "--download", "--out", str(tmp_path / "data")])
    assert status == 2
    assert calls == [{"repo_id": "PolyAI/minds14", "repo_type": "dataset",
                      "filename": "data/MInDS-14.zip", "local_dir": str(tmp_path / "data" / "downloads")}]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot download MINDS-14" in err[0] and "--minds14-root" in err[0]


def test_download_offline_in_hub_offline_mode(tmp_path, sprune_cli, monkeypatch):
    # The real hub client with HF_HUB_OFFLINE=1 refuses to touch the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    proc = sprune_cli("prep", "minds14", "--download", "--out", tmp_path / "data")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--minds14-root" in proc.stderr


def test_recipe_data_stage(fixture_root, tmp_path, sprune_on_path):
    recipe = Path(__file__).resolve().parents[1] / "egs" / "minds14" / "ic1"
    run = lambda *args: subprocess.run(["bash", "local/data.sh", *map(str, args)], cwd=recipe,
                                       env=sprune_on_path, capture_output=True, text=True,
                                       timeout=300)
    proc = run("--minds14-root", fixture_root, "--subset", "en-US", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    for name in ("train", "dev", "test"):
        assert set(DataDir.load(tmp_path / "data" / "en-US" / name).utt2lang.values()) == {"en-US"}
    proc = run(tmp_path / "data2")
    assert proc.returncode == 2 and "--minds14-root" in proc.stderr
    proc = run("--download", "maybe", tmp_path / "data2")
    assert proc.returncode == 2 and "true or false" in proc.stderr
    for subset in SUBSETS:   # the recipe has a fine-tuning config per subset of paper 000
        if subset == "all":
            continue
        conf = recipe / "conf" / f"finetune_{subset}.yaml"
        assert yaml.safe_load(conf.read_text())["task"] == "intent"
