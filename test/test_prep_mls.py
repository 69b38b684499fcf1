"""Multilingual LibriSpeech prep on tiny fixtures laid out like the real archives.

mls_dutch/ (FLAC) and mls_french_opus/ (Opus) with {train,dev,test}/{transcripts.txt,
segments.txt, audio/<spk>/<book>/<id>.<ext>}, train/limited_supervision/{1hr/0..5,9hr}/
handles.txt and metainfo.txt. The download runs against a local HTTP server.
"""
from __future__ import annotations

import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sprune import cli
from sprune.data import mls
from sprune.data.datadir import DataDir
from sprune.data.validate import count_errors, validate_data_dir
from sprune.errors import UserError

from test_prep_librispeech import http_root  # noqa: F401  (the local HTTP server fixture)

WORDS = {"dutch": "de kat zit op de mat en het regent hard", "french": "le chat dort sur le tapis"}
# speaker -> book per split; train has 3 speakers x 4 utterances, dev and test 2 x 2.
LAYOUT = {"train": {(101, 11): 4, (102, 12): 4, (103, 13): 4},
          "dev": {(201, 21): 2, (202, 22): 2}, "test": {(301, 31): 2, (302, 32): 2}}


def build_language(base: Path, language: str, ext: str = "flac", rate: int = 16000,
                   first_seconds: float = 0.2) -> Path:
    """mls_<language>[_opus]/ under base; every utterance lasts `first_seconds` + 0.1 s per
    index."""
    top = base / (f"mls_{language}" + ("_opus" if ext == "opus" else ""))
    rng = np.random.default_rng(len(language))
    words = WORDS[language].split()
    meta = [" SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID | TITLE | CHAPTER "]
    for split, speakers in LAYOUT.items():
        trans, segs = [], []
        for (spk, book), n in speakers.items():
            folder = top / split / "audio" / str(spk) / str(book)
            folder.mkdir(parents=True)
            for k in range(n):
                utt = f"{spk}_{book}_{k:06d}"
                seconds = first_seconds + 0.1 * k
                wav = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
                if ext == "opus":
                    soundfile.write(folder / f"{utt}.opus", wav, rate, format="OGG",
                                    subtype="OPUS")
                else:
                    soundfile.write(folder / f"{utt}.flac", wav, rate, format="FLAC")
                trans.append(f"{utt}\t{' '.join(words[k:k + 3])}\n")
                segs.append(f"{utt}\thttp://www.archive.org/{spk}.mp3\t{10.0 + k:.2f}\t"
                            f"{10.0 + k + seconds:.2f}\n")
            meta.append(f" {spk} | F | {split} | 1.0 | {book} | A Book | Chapter 1")
        (top / split / "transcripts.txt").write_text("".join(trans), encoding="utf-8")
        (top / split / "segments.txt").write_text("".join(segs), encoding="utf-8")
    limited = top / "train" / "limited_supervision"
    for fold in range(6):  # the 1hr folds: one utterance each (speaker 101 or 102)
        spk, book = (101, 11) if fold < 4 else (102, 12)
        (limited / "1hr" / str(fold)).mkdir(parents=True)
        (limited / "1hr" / str(fold) / "handles.txt").write_text(
            f"{spk}_{book}_{fold % 4:06d}\n")
    (limited / "9hr").mkdir()
    (limited / "9hr" / "handles.txt").write_text("103_13_000000\n103_13_000001\n")
    (top / "metainfo.txt").write_text("\n".join(meta) + "\n")
    return top


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("mls")
    build_language(base, "dutch")
    build_language(base, "french", ext="opus")
    return base


def quiet(_message: str) -> None:
    pass


# --- prep ------------------------------------------------------------------------------------

def test_flac_language_becomes_valid_dirs_with_tags_and_speakers(corpus, tmp_path):
    written = mls.prepare_mls(corpus, tmp_path / "data", "nl", log=quiet)
    assert written == {s: tmp_path / "data" / "nl" / s for s in ("train", "dev", "test")}
    for split, folder in written.items():
        problems = validate_data_dir(folder)
        assert count_errors(problems) == 0 and not problems, [str(p) for p in problems]
    train = DataDir.load(written["train"])
    assert len(train) == 12 and set(train.utt2spk.values()) == {"nl-101", "nl-102", "nl-103"}
    assert train.text["nl-101_11_000001"] == "kat zit op"
    assert set(train.utt2lang.values()) == {"nl-NL"}
    assert all(p.endswith(".flac") and Path(p).is_absolute() for p in train.wav_scp.values())
    test = DataDir.load(written["test"])
    assert set(test.utt2spk.values()) == {"nl-301", "nl-302"}          # unseen speakers
    # root may also be the language folder itself, and the language its MLS name
    again = mls.prepare_mls(corpus / "mls_dutch", tmp_path / "d2", "dutch", ["dev"], log=quiet)
    assert DataDir.load(again["dev"]).utt_ids == DataDir.load(written["dev"]).utt_ids


def test_limited_supervision_sets(corpus, tmp_path):
    sets = {}
    for train_set, fold in (("10min", 0), ("10min", 5), ("1h", 0), ("10h", 0)):
        out = mls.prepare_mls(corpus, tmp_path, "nl", ["train"], train_set=train_set,
                              fold=fold, log=quiet)["train"]
        sets[out.name] = set(DataDir.load(out).utt_ids)
    assert sets["train_10min"] == {"nl-101_11_000000"}
    assert sets["train_10min_fold5"] == {"nl-102_12_000001"}
    assert sets["train_1h"] == {f"nl-101_11_00000{k}" for k in range(4)} | {
        "nl-102_12_000000", "nl-102_12_000001"}
    assert sets["train_10h"] == sets["train_1h"] | {"nl-103_13_000000", "nl-103_13_000001"}
    assert mls.train_dir_name("full") == "train" and mls.train_dir_name("10min", 2) == \
        "train_10min_fold2"


def test_opus_is_converted_once_to_16k_wavs(corpus, tmp_path):
    logs: list[str] = []
    out = mls.prepare_mls(corpus, tmp_path, "fr", ["dev"], log=logs.append)["dev"]
    data = DataDir.load(out)
    assert len(data) == 4 and set(data.utt2lang.values()) == {"fr-FR"}
    wav = data.wav_scp["fr-201_21_000001"]
    assert wav == str((tmp_path / "audio" / "fr" / "dev" / "fr-201_21_000001.wav").resolve())
    info = soundfile.info(wav)
    assert (info.samplerate, info.channels) == (16000, 1) and abs(info.duration - 0.3) < 0.01
    assert count_errors(validate_data_dir(out)) == 0
    mls.prepare_mls(corpus, tmp_path, "fr", ["dev"], log=logs.append)
    assert any(line.startswith("reusing 4 converted clips") for line in logs)
    with pytest.raises(UserError, match=r"holds no mls_french/ \(there: mls_dutch, "
                                        r"mls_french_opus\); unpack mls_french.tar.gz"):
        mls.prepare_mls(corpus, tmp_path, "fr", ["dev"], audio="flac", log=quiet)


def test_max_utts_and_max_hours_take_a_seeded_subset(corpus, tmp_path):
    def subset(**kw) -> list[str]:
        out = mls.prepare_mls(corpus, tmp_path / "x", "nl", ["train"], log=quiet, **kw)
        return DataDir.load(out["train"]).utt_ids

    five = subset(max_utts=5, seed=1)
    assert len(five) == 5 and subset(max_utts=5, seed=1) == five
    assert subset(max_utts=5, seed=2) != five
    # 3 speakers x (0.2 + 0.3 + 0.4 + 0.5 s) = 4.2 s; 1.5 s leaves room for a few only
    durations = mls.read_durations(corpus / "mls_dutch" / "train")
    short = subset(max_hours=1.5 / 3600, seed=0)
    assert 0 < len(short) < 12
    assert sum(durations[u.removeprefix("nl-")] for u in short) <= 1.5 + 1e-9
    assert len(subset(max_hours=1.0)) == 12


# --- bad input: one line, exit 2 -------------------------------------------------------------

def damaged_copy(corpus: Path, tmp_path: Path) -> Path:
    shutil.copytree(corpus / "mls_dutch", tmp_path / "mls_dutch")
    return tmp_path / "mls_dutch"


@pytest.mark.parametrize("damage, message", [
    (lambda top: (top / "dev/transcripts.txt").write_text("201_21_000000 no tab here\n"),
     r"dev/transcripts.txt:1: expected '<speaker>_<book>_<n><TAB>words'"),
    (lambda top: (top / "dev/transcripts.txt").write_text(
        "201_21_000000\tde kat\n201_21_000000\tde kat\n"), r"listed twice \(first at line 1\)"),
    (lambda top: (top / "dev/audio/201/21/201_21_000001.flac").unlink(),
     r"201_21_000001.flac is missing \(listed in .*dev/transcripts.txt\)"),
    (lambda top: soundfile.write(top / "dev/audio/201/21/201_21_000000.flac",
                                 np.zeros(800, np.float32), 8000),
     r"201_21_000000.flac is 8000 Hz with 1 channel\(s\); MLS FLAC audio is 16 kHz mono"),
    (lambda top: (top / "dev/transcripts.txt").unlink(), r"dev/transcripts.txt is missing"),
    (lambda top: shutil.rmtree(top / "dev"), r"mls_dutch/dev not found"),
])
def test_damaged_corpus_is_named(corpus, tmp_path, damage, message):
    damage(damaged_copy(corpus, tmp_path))
    with pytest.raises(UserError, match=message):
        mls.prepare_mls(tmp_path, tmp_path / "out", "nl", ["dev"], log=quiet)
    assert not (tmp_path / "out" / "nl" / "dev").exists()


def test_limited_handles_must_exist(corpus, tmp_path):
    top = damaged_copy(corpus, tmp_path)
    (top / "train/limited_supervision/9hr/handles.txt").write_text("999_9_000000\n")
    with pytest.raises(UserError, match=r"utterance 999_9_000000 is not in .*transcripts.txt"):
        mls.prepare_mls(tmp_path, tmp_path / "out", "nl", ["train"], train_set="10h", log=quiet)
    (top / "train/limited_supervision/1hr/3/handles.txt").unlink()
    with pytest.raises(UserError, match=r"1hr/3/handles.txt is missing"):
        mls.prepare_mls(tmp_path, tmp_path / "out", "nl", ["train"], train_set="1h", log=quiet)


@pytest.mark.parametrize("args, words", [
    (["--root", "{tmp}/none", "--langs", "nl"], "none does not exist"),
    (["--root", "{corpus}", "--langs", "nl,xx"], "MLS has no language 'xx'"),
    (["--root", "{corpus}", "--langs", "de"], "holds no mls_german_opus or mls_german/"),
    (["--root", "{corpus}", "--langs", "nl", "--splits", "train,eval"],
     "unknown MLS split 'eval'"),
    (["--root", "{corpus}", "--langs", "nl", "--train-set", "5h"],
     "unknown MLS training set '5h'"),
    (["--root", "{corpus}", "--langs", "nl", "--train-set", "10min", "--fold", "6"],
     "fold 6 does not exist"),
    (["--root", "{corpus}", "--langs", "nl", "--max-hours", "0"], "--max-hours must be positive"),
    (["--root", "{corpus}", "--langs", "nl", "--max-utts", "0"], "--max-utts must be at least 1"),
    (["--root", "{corpus}", "--langs", ","], "--langs is empty"),
    (["--langs", "nl"], "one of the arguments --root --download is required"),
])
def test_cli_errors_are_one_line_exit_2(corpus, tmp_path, cli, capsys, args, words):
    argv = [a.format(tmp=tmp_path, corpus=corpus) for a in args]
    try:
        proc = cli("prep", "mls", *argv, "--out", tmp_path / "d")
        code, err = proc.returncode, proc.stderr
    except SystemExit as exit_:  # argparse's usage errors exit inside main()
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "d" / "nl").exists()


def test_cli_prepares_several_languages(corpus, tmp_path, cli):
    proc = cli("prep", "mls", "--root", corpus, "--langs", "nl,french", "--splits", "dev,train",
               "--train-set", "1h", "--out", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert len(DataDir.load(tmp_path / "data" / "nl" / "train_1h")) == 6
    assert len(DataDir.load(tmp_path / "data" / "fr" / "dev")) == 4
    combined = DataDir.combine([DataDir.load(tmp_path / "data" / c / "dev") for c in ("nl", "fr")])
    assert set(combined.utt2lang.values()) == {"nl-NL", "fr-FR"}       # ids do not clash


# --- download --------------------------------------------------------------------------------

def test_download_offline_fails_with_one_line(tmp_path, monkeypatch, cli):
    urls = []

    def no_network(request, timeout=None):
        urls.append(request.full_url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    proc = cli("prep", "mls", "--download", "--langs", "it", "--out", tmp_path / "data")
    assert proc.returncode == 2
    assert urls == ["https://dl.fbaipublicfiles.com/mls/mls_italian_opus.tar.gz"]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download https://dl.fbaipublicfiles.com/mls/" in lines[0]


def test_download_end_to_end_resumes_and_prepares(http_root, corpus, tmp_path, cli):  # noqa: F811
    www, url, _ = http_root
    archive = www / "mls_dutch.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(corpus / "mls_dutch", arcname="mls_dutch")
    downloads = tmp_path / "dl"
    downloads.mkdir()
    (downloads / "mls_dutch.tar.gz.part").write_bytes(archive.read_bytes()[:1000])  # broken off
    proc = cli("prep", "mls", "--download", "--download-dir", downloads, "--base-url", url,
               "--audio", "flac", "--langs", "nl", "--splits", "test", "--out", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert DataDir.load(tmp_path / "data" / "nl" / "test").utt_ids == [
        "nl-301_31_000000", "nl-301_31_000001", "nl-302_32_000000", "nl-302_32_000001"]
    assert (downloads / "mls_dutch.tar.gz").read_bytes() == archive.read_bytes()
    assert [p.name for p in downloads.iterdir() if p.name.startswith(".")] == []
    archive.unlink()  # unpacked already: a second run needs no server
    proc = cli("prep", "mls", "--download", "--download-dir", downloads, "--base-url", url,
               "--audio", "flac", "--langs", "nl", "--splits", "dev", "--out", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr


def test_recipe_data_stage(corpus, tmp_path, sprune_on_path):
    import subprocess

    recipe = Path(__file__).resolve().parents[1] / "egs" / "mls" / "asr1"
    proc = subprocess.run(["bash", "local/data.sh", "--mls-root", str(corpus), "--langs",
                           "nl,french", "--train-set", "1h", "--max-utts", "5",
                           str(tmp_path / "data")], cwd=recipe, env=sprune_on_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    sizes = {f"{code}/{name}": len(DataDir.load(tmp_path / "data" / code / name))
             for code in ("nl", "fr") for name in ("train_1h", "dev", "test")}
    assert sizes == {"nl/train_1h": 5, "nl/dev": 4, "nl/test": 4,
                     "fr/train_1h": 5, "fr/dev": 4, "fr/test": 4}
