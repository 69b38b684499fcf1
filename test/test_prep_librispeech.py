"""LibriSpeech and Libri-light prep on tiny fixtures laid out like the real corpora.

LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac + <spk>-<chapter>.trans.txt, and
librispeech_finetuning/1h/{0..5}/{clean,other}/... + 9h/{clean,other}/... for Libri-light.
The download code runs against a local HTTP server (no outside network).
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sprune import cli
from sprune.bin.prep import librilight_dir_name
from sprune.data import librispeech
from sprune.data.datadir import DataDir
from sprune.data.librispeech import (fetch_url, librilight_folders, prepare_librilight,
                                     prepare_librispeech)
from sprune.data.validate import count_errors, validate_data_dir
from sprune.errors import UserError

WORDS = ("HE", "HOPED", "THERE", "WOULD", "BE", "STEW", "FOR", "DINNER")


def write_chapter(tree: Path, speaker: int, chapter: int, n_utts: int, rate: int = 16000) -> list[str]:
    """Write `n_utts` short FLACs and their trans.txt under tree/<speaker>/<chapter>."""
    folder = tree / str(speaker) / str(chapter)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(speaker * 1000 + chapter)
    lines, ids = [], []
    for n in range(n_utts):
        utt = f"{speaker}-{chapter}-{n:04d}"
        wav = (0.1 * rng.standard_normal(int(0.1 * rate))).astype(np.float32)
        soundfile.write(folder / f"{utt}.flac", wav, rate, format="FLAC")
        lines.append(f"{utt} {' '.join(WORDS[(n + k) % len(WORDS)] for k in range(n % 3 + 2))}\n")
        ids.append(utt)
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return ids


def build_librispeech(base: Path) -> dict[str, list[str]]:
    """LibriSpeech/{test-clean,test-other}; returns split -> utterance ids."""
    tree = base / "LibriSpeech"
    return {
        "test-clean": write_chapter(tree / "test-clean", 1089, 134686, 3)
        + write_chapter(tree / "test-clean", 121, 121726, 2),
        "test-other": write_chapter(tree / "test-other", 1688, 142285, 2),
    }


def build_librilight(base: Path) -> dict[str, list[str]]:
    """librispeech_finetuning/ with 3 utterances per 1h fold (2 clean + 1 other) and 6 in 9h;
    returns folder -> utterance ids."""
    tree = base / "librispeech_finetuning"
    ids = {}
    for fold in range(6):
        ids[f"1h/{fold}/clean"] = write_chapter(tree / "1h" / str(fold) / "clean", 100 + fold, 10, 2)
        ids[f"1h/{fold}/other"] = write_chapter(tree / "1h" / str(fold) / "other", 200 + fold, 20, 1)
    ids["9h/clean"] = write_chapter(tree / "9h" / "clean", 300, 30, 4)
    ids["9h/other"] = write_chapter(tree / "9h" / "other", 400, 40, 2)
    return ids


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("libri")
    return base, build_librispeech(base), build_librilight(base)


# ----------------------------------------------------------------------------- LibriSpeech

def test_librispeech_split_becomes_a_valid_dir(corpora, tmp_path):
    base, splits, _ = corpora
    data = prepare_librispeech(base, "test-clean", tmp_path / "test_clean", log=lambda _m: None)
    assert data.utt_ids == sorted(splits["test-clean"])
    problems = validate_data_dir(tmp_path / "test_clean")
    assert count_errors(problems) == 0 and not problems, [str(p) for p in problems]
    loaded = DataDir.load(tmp_path / "test_clean")
    assert loaded.text["1089-134686-0000"] == "HE HOPED"
    assert loaded.text["1089-134686-0001"] == "HOPED THERE WOULD"
    assert loaded.utt2spk["121-121726-0001"] == "121"
    assert all(p.endswith(".flac") and Path(p).is_absolute() for p in loaded.wav_scp.values())
    # root may also be the LibriSpeech/ folder itself
    again = prepare_librispeech(base / "LibriSpeech", "test-other", tmp_path / "o", log=lambda _m: None)
    assert again.utt_ids == sorted(splits["test-other"])


def test_librispeech_errors_name_the_path(corpora, tmp_path):
    base, _, _ = corpora
    with pytest.raises(UserError, match=r"nowhere does not exist.*--librispeech-root"):
        prepare_librispeech(tmp_path / "nowhere", "test-clean", tmp_path / "out")
    with pytest.raises(UserError, match=r"LibriSpeech/dev-clean not found; unpack dev-clean.tar.gz"):
        prepare_librispeech(base, "dev-clean", tmp_path / "out")
    with pytest.raises(UserError, match="unknown LibriSpeech split 'test-noisy'"):
        prepare_librispeech(base, "test-noisy", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda ch: (ch / "5-6.trans.txt").write_text("5-6-0000 HELLO\nnot-an-id HI\n"),
     r"5-6.trans.txt:2: expected '<speaker>-<chapter>-<n> WORDS'"),
    (lambda ch: (ch / "5-6.trans.txt").write_text("5-6-0000 HELLO\n5-6-0007 WORLD\n"),
     r"5-6.trans.txt:2: .*5-6-0007.flac is missing"),
    (lambda ch: (ch / "5-6.trans.txt").write_text("5-6-0000 HELLO\n5-7-0001 WORLD\n"),
     r"5-6.trans.txt:2: utterance 5-7-0001 does not belong to 5/6"),
    (lambda ch: soundfile.write(ch / "5-6-0001.flac", np.zeros(800, np.float32), 8000),
     r"5-6-0001.flac is 8000 Hz with 1 channel"),
])
def test_damaged_corpus_is_named(tmp_path, damage, message):
    tree = tmp_path / "LibriSpeech" / "test-clean"
    write_chapter(tree, 5, 6, 2)
    damage(tree / "5" / "6")
    with pytest.raises(UserError, match=message):
        prepare_librispeech(tmp_path, "test-clean", tmp_path / "out")


# ----------------------------------------------------------------------------- Libri-light

def test_librilight_sets_have_the_right_utterances(corpora, tmp_path):
    base, _, ids = corpora
    sizes = {}
    for which in ("10min", "1h", "10h"):
        data = prepare_librilight(base, which, tmp_path / which, log=lambda _m: None)
        assert count_errors(validate_data_dir(tmp_path / which)) == 0
        sizes[which] = set(data.utt_ids)
    assert sizes["10min"] == set(ids["1h/0/clean"] + ids["1h/0/other"])
    assert len(sizes["10min"]) == 3 and len(sizes["1h"]) == 18 and len(sizes["10h"]) == 24
    assert sizes["10min"] < sizes["1h"] < sizes["10h"]
    assert sizes["10h"] - sizes["1h"] == set(ids["9h/clean"] + ids["9h/other"])
    fold3 = prepare_librilight(base / "librispeech_finetuning", "10min", tmp_path / "f3", fold=3,
                               log=lambda _m: None)
    assert set(fold3.utt_ids) == set(ids["1h/3/clean"] + ids["1h/3/other"])
    assert set(fold3.utt2spk.values()) == {"103", "203"}


def test_librilight_names_and_errors(corpora, tmp_path):
    base, _, _ = corpora
    assert librilight_folders("10min", 2) == ["1h/2/clean", "1h/2/other"]
    assert len(librilight_folders("1h")) == 12 and librilight_folders("10h")[-1] == "9h/other"
    assert librilight_dir_name("10min", 0) == "train_10min"
    assert librilight_dir_name("10min", 4) == "train_10min_fold4"
    assert librilight_dir_name("10h", 0) == "train_10h"
    with pytest.raises(UserError, match="unknown Libri-light set '5h'"):
        prepare_librilight(base, "5h", tmp_path / "x")
    with pytest.raises(UserError, match="fold 6 does not exist"):
        prepare_librilight(base, "10min", tmp_path / "x", fold=6)
    with pytest.raises(UserError, match=r"librispeech_finetuning/1h not found"):
        prepare_librilight(tmp_path, "1h", tmp_path / "x")
    broken = tmp_path / "broken" / "librispeech_finetuning"
    write_chapter(broken / "1h" / "0" / "clean", 1, 2, 1)
    with pytest.raises(UserError, match=r"1h/0/other not found; the Libri-light copy"):
        prepare_librilight(tmp_path / "broken", "10min", tmp_path / "x")


# ----------------------------------------------------------------------------- CLI

def test_cli_prepares_splits_and_sets(corpora, tmp_path, sprune_cli):
    base, splits, _ = corpora
    proc = sprune_cli("prep", "librispeech", "--root", base, "--splits", "test-clean,test-other",
                      "--out", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert len(DataDir.load(tmp_path / "data" / "test_clean")) == 5
    assert len(DataDir.load(tmp_path / "data" / "test_other")) == 2
    proc = sprune_cli("prep", "librilight", "--root", base, "--which", "10h", "--out", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert len(DataDir.load(tmp_path / "data" / "train_10h")) == 24


@pytest.mark.parametrize("args, words", [
    (["librispeech", "--root", "{tmp}/none"], "none does not exist"),
    (["librispeech", "--root", "{tmp}", "--splits", "test-clean,dev-noisy"],
     "unknown LibriSpeech split 'dev-noisy'"),
    (["librilight", "--root", "{tmp}", "--which", "1h"], "librispeech_finetuning/1h not found"),
    (["librilight", "--root", "{tmp}", "--which", "2h"], "unknown Libri-light set '2h'"),
    (["librispeech"], "one of the arguments --root --download is required"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, sprune_cli, args, words):
    proc = sprune_cli("prep", *[a.format(tmp=tmp_path) for a in args], "--out", tmp_path / "d")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


# ----------------------------------------------------------------------------- download

def test_download_offline_fails_with_one_line(tmp_path, monkeypatch, capsys):
    urls = []

    def no_network(request, timeout=None):
        urls.append(request.full_url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    status = cli.main(["prep", "librispeech", "--download", "--splits", "test-other",
                       "--out", str(tmp_path / "data")])
    assert status == 2
    assert urls == ["https://www.openslr.org/resources/12/test-other.tar.gz"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download https://www.openslr.org" in err[0]
    status = cli.main(["prep", "librilight", "--download", "--out", str(tmp_path / "data")])
    assert status == 2 and urls[-1] == librispeech.LIBRILIGHT_URL
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring `Range: bytes=N-` (as openslr does) when `ranges` is on."""

    ranges = True

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header and self.ranges:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over tmp_path/www; yields (folder, base URL, handler class)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Handler", (_RangeHandler,), {})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_fetch_url_resumes_and_checks_sha256(http_root, tmp_path):
    www, url, handler = http_root
    payload = bytes(range(256)) * 4000
    (www / "blob.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "dl" / "blob.bin"
    dest.parent.mkdir()
    (tmp_path / "dl" / "blob.bin.part").write_bytes(payload[:300000])   # an interrupted run
    assert fetch_url(f"{url}/blob.bin", dest, digest, log=lambda _m: None) == dest
    assert dest.read_bytes() == payload and not (tmp_path / "dl" / "blob.bin.part").exists()

    handler.ranges = False   # a server that ignores Range: start again, still correct
    dest2 = tmp_path / "dl" / "again.bin"
    (tmp_path / "dl" / "again.bin.part").write_bytes(b"garbage" * 10)
    fetch_url(f"{url}/blob.bin", dest2, digest, log=lambda _m: None)
    assert dest2.read_bytes() == payload

    with pytest.raises(UserError, match="SHA-256 mismatch"):
        fetch_url(f"{url}/blob.bin", tmp_path / "dl" / "bad.bin", "0" * 64, log=lambda _m: None)
    assert not (tmp_path / "dl" / "bad.bin").exists()
    assert not (tmp_path / "dl" / "bad.bin.part").exists()
    with pytest.raises(UserError, match=r"HTTP 404"):
        fetch_url(f"{url}/missing.tar.gz", tmp_path / "dl" / "m", None, log=lambda _m: None)


def test_download_librispeech_end_to_end(http_root, corpora, tmp_path, monkeypatch):
    base, splits, _ = corpora
    www, url, _ = http_root
    archive = www / "test-other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(base / "LibriSpeech" / "test-other", arcname="LibriSpeech/test-other")
    monkeypatch.setattr(librispeech, "LIBRISPEECH_URL", url + "/{split}.tar.gz")
    monkeypatch.setitem(librispeech.LIBRISPEECH_SHA256, "test-other",
                        hashlib.sha256(archive.read_bytes()).hexdigest())
    status = cli.main(["prep", "librispeech", "--download", "--splits", "test-other",
                       "--out", str(tmp_path / "data")])
    assert status == 0
    assert DataDir.load(tmp_path / "data" / "test_other").utt_ids == sorted(splits["test-other"])
    assert (tmp_path / "data" / "downloads" / "LibriSpeech" / "test-other").is_dir()
    leftovers = [p.name for p in (tmp_path / "data" / "downloads").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_recipe_data_stage(corpora, tmp_path, sprune_on_path):
    base, _, _ = corpora
    recipe = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "asr1"
    run = lambda *args: subprocess.run(["bash", "local/data.sh", *map(str, args)], cwd=recipe,
                                       env=sprune_on_path, capture_output=True, text=True,
                                       timeout=300)
    proc = run("--librispeech-root", base, "--librilight-root", base,
               "--test-sets", "test-clean test-other", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    counts = {name: len(DataDir.load(tmp_path / "data" / name))
              for name in ("test_clean", "test_other", "train_10min", "train_1h", "train_10h")}
    assert counts == {"test_clean": 5, "test_other": 2, "train_10min": 3, "train_1h": 18,
                      "train_10h": 24}
    proc = run(tmp_path / "data2")
    assert proc.returncode == 2 and "--librispeech-root" in proc.stderr
