"""LibriSpeech and the Libri-light limited-resource splits as Kaldi data dirs.

LibriSpeech (openslr.org/12) unpacks every `<split>.tar.gz` to

    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt-id> WORDS ..."

Libri-light's fine-tuning sets (librispeech_finetuning.tgz) use the same chapter folders under

    librispeech_finetuning/1h/{0..5}/{clean,other}/<speaker>/<chapter>/...   six 10-minute folds
    librispeech_finetuning/9h/{clean,other}/<speaker>/<chapter>/...

and its 10 min set is one fold `1h/<k>`, 1 h is the six folds, 10 h is 1 h plus `9h`.

The audio is 16 kHz FLAC, which soundfile reads, so wav.scp points at the FLAC files in
place. Transcripts stay upper case as in the corpus. utt2spk maps an utterance to its reader
(the first field of its id), so utterance ids start with their speaker id as Kaldi expects.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

import soundfile

from sprune.data.audio import SAMPLE_RATE
from sprune.data.datadir import DataDir
from sprune.errors import UserError

Log = Callable[[str], None]

LIBRISPEECH_URL = "https://www.openslr.org/resources/12/{split}.tar.gz"
# SHA-256 of the openslr archives (the values torchaudio's LIBRISPEECH dataset checks).
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
LIBRISPEECH_SPLITS = tuple(LIBRISPEECH_SHA256)

LIBRILIGHT_URL = "https://dl.fbaipublicfiles.com/librilight/data/librispeech_finetuning.tgz"
LIBRILIGHT_SHA256 = "5d1efdc777b548194d7e09ba89126e2188026df9fd57aa57eb14408d2b2342af"
LIBRILIGHT_SETS = ("10min", "1h", "10h")
LIBRILIGHT_FOLDS = 6

_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def _print(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------- reading

def read_chapter_tree(tree: Path) -> DataDir:
    """Read `<tree>/<speaker>/<chapter>/{*.flac, *.trans.txt}` into a DataDir.

    Every transcript line must have its FLAC file, 16 kHz mono; a malformed line, a missing
    or wrongly sampled file is a `UserError` naming the file (and line).
    """
    wav_scp: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    for trans in sorted(tree.glob("*/*/*.trans.txt")):
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        with open(trans, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.strip().split(maxsplit=1)
                if not parts:
                    continue
                match = _UTT_ID.match(parts[0])
                if len(parts) < 2 or not match:
                    raise UserError(f"{trans}:{lineno}: expected '<speaker>-<chapter>-<n> WORDS'; "
                                    "the corpus copy is damaged, unpack it again")
                utt = parts[0]
                if match[1] != speaker or match[2] != chapter:
                    raise UserError(f"{trans}:{lineno}: utterance {utt} does not belong to "
                                    f"{speaker}/{chapter}; the corpus copy is damaged")
                if utt in wav_scp:
                    raise UserError(f"{trans}:{lineno}: utterance {utt} is listed twice")
                flac = trans.parent / f"{utt}.flac"
                if not flac.is_file():
                    raise UserError(f"{trans}:{lineno}: {flac} is missing; unpack the corpus again")
                wav_scp[utt] = str(flac.resolve())
                text[utt] = " ".join(parts[1].split())
                utt2spk[utt] = speaker
    for utt, path in wav_scp.items():
        try:
            info = soundfile.info(path)
        except Exception as err:  # libsndfile reports corrupt files with several types
            raise UserError(f"cannot decode {path}: {str(err).splitlines()[0]}") from None
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise UserError(f"{path} is {info.samplerate} Hz with {info.channels} channel(s); "
                            "LibriSpeech audio is 16 kHz mono, so this is not LibriSpeech")
    return DataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text)


def locate_librispeech_split(root: str | os.PathLike, split: str) -> Path:
    """`<root>/LibriSpeech/<split>` (or `<root>/<split>` when root is LibriSpeech/ itself)."""
    if split not in LIBRISPEECH_SPLITS:
        raise UserError(f"unknown LibriSpeech split '{split}'; use one of "
                        f"{', '.join(LIBRISPEECH_SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"LibriSpeech root {root} does not exist; pass the folder that holds "
                        "LibriSpeech/ (sprune prep librispeech --root DIR; recipe option "
                        "--librispeech-root)")
    for folder in (root / "LibriSpeech" / split, root / split):
        if folder.is_dir():
            return folder
    raise UserError(f"{root / 'LibriSpeech' / split} not found; unpack {split}.tar.gz from "
                    f"openslr.org/12 under {root} (or pass --download)")


def prepare_librispeech(root: str | os.PathLike, split: str, out_dir: str | os.PathLike,
                        log: Log = _print) -> DataDir:
    """Write the Kaldi data dir of one LibriSpeech split (e.g. test-clean) to `out_dir`."""
    folder = locate_librispeech_split(root, split)
    data = read_chapter_tree(folder)
    if len(data) == 0:
        raise UserError(f"{folder} holds no <speaker>/<chapter>/*.trans.txt; unpack "
                        f"{split}.tar.gz again")
    data.save(out_dir)
    log(f"wrote {out_dir}: {split}, {len(data)} utterances, {len(data.spk2utt)} speakers")
    return data


def librilight_folders(which: str, fold: int = 0) -> list[str]:
    """Sub-folders of librispeech_finetuning/ making up a Libri-light training set."""
    if which not in LIBRILIGHT_SETS:
        raise UserError(f"unknown Libri-light set '{which}'; use one of {', '.join(LIBRILIGHT_SETS)}")
    if not 0 <= fold < LIBRILIGHT_FOLDS:
        raise UserError(f"Libri-light fold {fold} does not exist; the 10 min folds are "
                        f"0..{LIBRILIGHT_FOLDS - 1}")
    folds = [fold] if which == "10min" else range(LIBRILIGHT_FOLDS)
    folders = [f"1h/{k}/{kind}" for k in folds for kind in ("clean", "other")]
    if which == "10h":
        folders += ["9h/clean", "9h/other"]
    return folders


def locate_librilight(root: str | os.PathLike) -> Path:
    """`<root>/librispeech_finetuning` (or root itself when it holds 1h/ and 9h/)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Libri-light root {root} does not exist; pass the folder that holds "
                        "librispeech_finetuning/ (sprune prep librilight --root DIR; recipe "
                        "option --librilight-root)")
    for folder in (root / "librispeech_finetuning", root):
        if (folder / "1h").is_dir():
            return folder
    raise UserError(f"{root / 'librispeech_finetuning' / '1h'} not found; unpack "
                    f"librispeech_finetuning.tgz ({LIBRILIGHT_URL}) under {root}")


def prepare_librilight(root: str | os.PathLike, which: str, out_dir: str | os.PathLike,
                       fold: int = 0, log: Log = _print) -> DataDir:
    """Write the Kaldi data dir of a Libri-light set ('10min' = fold `fold` of 1h/, '1h',
    '10h') to `out_dir`."""
    base = locate_librilight(root)
    parts = []
    for sub in librilight_folders(which, fold):
        folder = base / sub
        if not folder.is_dir():
            raise UserError(f"{folder} not found; the Libri-light copy under {base} is incomplete, "
                            "unpack librispeech_finetuning.tgz again")
        part = read_chapter_tree(folder)
        if len(part) == 0:
            raise UserError(f"{folder} holds no <speaker>/<chapter>/*.trans.txt; unpack "
                            "librispeech_finetuning.tgz again")
        parts.append(part)
    data = DataDir.combine(parts)
    data.save(out_dir)
    hours = sum(soundfile.info(p).duration for p in data.wav_scp.values()) / 3600
    log(f"wrote {out_dir}: Libri-light {which}, {len(data)} utterances, {hours:.2f} h")
    return data


# ----------------------------------------------------------------------------- download

def fetch_url(url: str, dest: str | os.PathLike, sha256: str | None = None,
              log: Log = _print, chunk: int = 1 << 20) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part`, and check its SHA-256.

    The file appears at `dest` only once complete and verified. No network is a
    `UserError` that names the URL so the user can fetch it by other means.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and response.status != 206:  # server ignored the range: start again
                have = 0
            total = response.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            log(f"downloading {url}" + (f" ({total / 1e6:.0f} MB)" if total else "")
                + (f", resuming at {have / 1e6:.0f} MB" if have else ""))
            with open(part, "ab" if have else "wb") as f:
                while block := response.read(chunk):
                    f.write(block)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already complete
            pass
        else:
            raise UserError(f"cannot download {url} (HTTP {err.code}); fetch it by other means "
                            f"into {dest.parent} and pass that folder as the corpus root") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download {url} ({reason}); fetch it by other means into "
                        f"{dest.parent} and pass that folder as the corpus root") from None
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        if digest.hexdigest() != sha256:
            part.unlink()
            raise UserError(f"{url} arrived corrupted (SHA-256 mismatch); run the download again")
    os.replace(part, dest)
    return dest


def _unpack_tar(archive: Path, dest: Path, top: str, log: Log) -> None:
    """Extract `archive` (members under `top/`) into `dest`. Each folder of `top/` appears
    in place by one rename once fully extracted; existing ones are kept."""
    log(f"unpacking {archive} into {dest}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=dest))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(tmp)
        if not (tmp / top).is_dir():
            raise UserError(f"{archive} holds no {top}/ folder; it is not the expected archive")
        (dest / top).mkdir(parents=True, exist_ok=True)
        for item in sorted((tmp / top).iterdir()):
            if not (dest / top / item.name).exists():
                os.replace(item, dest / top / item.name)
    except tarfile.TarError as err:
        raise UserError(f"cannot unpack {archive} ({err}); delete it and download again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_librispeech(dest: str | os.PathLike, splits: Iterable[str],
                         log: Log = _print) -> Path:
    """Fetch and unpack LibriSpeech splits from openslr.org into `dest/LibriSpeech/<split>`;
    returns `dest`, the root to pass to `prepare_librispeech`."""
    dest = Path(dest)
    for split in splits:
        if split not in LIBRISPEECH_SPLITS:
            raise UserError(f"unknown LibriSpeech split '{split}'; use one of "
                            f"{', '.join(LIBRISPEECH_SPLITS)}")
        if (dest / "LibriSpeech" / split).is_dir():
            continue
        archive = fetch_url(LIBRISPEECH_URL.format(split=split), dest / f"{split}.tar.gz",
                            LIBRISPEECH_SHA256[split], log)
        _unpack_tar(archive, dest, "LibriSpeech", log)
    return dest


def download_librilight(dest: str | os.PathLike, log: Log = _print) -> Path:
    """Fetch and unpack Libri-light's librispeech_finetuning.tgz into `dest`; returns `dest`."""
    dest = Path(dest)
    if not (dest / "librispeech_finetuning" / "1h").is_dir():
        archive = fetch_url(LIBRILIGHT_URL, dest / "librispeech_finetuning.tgz",
                            LIBRILIGHT_SHA256, log)
        _unpack_tar(archive, dest, "librispeech_finetuning", log)
    return dest
