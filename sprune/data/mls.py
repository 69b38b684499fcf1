"""Multilingual LibriSpeech (MLS, openslr.org/94) as Kaldi data dirs, per language and split.

MLS holds read LibriVox audiobooks in 8 languages. Each language comes as one archive, with
16 kHz FLAC (`mls_<language>.tar.gz`) or Opus (`mls_<language>_opus.tar.gz`, several times
smaller) audio, which unpacks to

    mls_<language>[_opus]/metainfo.txt        SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID | ...
    mls_<language>[_opus]/<split>/transcripts.txt   "<spk>_<book>_<n>\\t<transcript>"
    mls_<language>[_opus]/<split>/segments.txt      "<spk>_<book>_<n>\\t<url>\\t<start>\\t<end>"
    mls_<language>[_opus]/<split>/audio/<spk>/<book>/<spk>_<book>_<n>.flac (or .opus)
    mls_<language>[_opus]/train/limited_supervision/1hr/{0..5}/handles.txt   six 10-min folds
    mls_<language>[_opus]/train/limited_supervision/9hr/handles.txt

for split in train, dev, test (speaker-disjoint). The limited-supervision lists name
utterances of train (one id per line): as for Libri-light, the 10 min set is one fold of
1hr/, 1 h is the six folds and 10 h is 1 h plus 9hr/.

`prepare_mls` writes `<out>/<code>/<split>` (train_10min / train_1h / train_10h for the
limited sets; a non-zero 10 min fold gets `_fold<k>`) with wav.scp, text (the transcript as
MLS ships it: lower case, no punctuation), utt2spk, spk2utt and utt2lang. Languages are
named by their short code (en, de, nl, fr, es, it, pt, pl) or MLS name (french); utt2lang
holds the same tags as the offline corpus and MINDS-14 (`MLS_TAGS`: fr-FR, it-IT, nl-NL,
en-US, ...; MLS does not tell regions apart, so each language takes its main one, and
Portuguese, mostly Brazilian LibriVox readers, is tagged pt-BR). Speaker ids are
`<code>-<spk>` and utterance ids `<code>-<spk>_<book>_<n>`, so languages can be combined.

Audio: FLAC is 16 kHz mono, so wav.scp points at the files in place (headers checked); Opus
is decoded with soundfile (libsndfile >= 1.0.29 reads Ogg Opus; no ffmpeg needed),
resampled and written once as 16 kHz WAVs under `<out>/audio/<code>/<dir name>/` (reused on
a re-run when its MANIFEST matches). `max_utts` / `max_hours` keep a seeded random subset of
a split (durations from segments.txt, so nothing is decoded to choose them).

`download_mls` fetches `<base_url>/mls_<language>[_opus].tar.gz` (resumable; MLS publishes
no checksums, so a damaged archive shows when it is unpacked) and unpacks it under `dest`.
The archives are large (tens of GB for most languages, English far more): prefer Opus.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import soundfile

from sprune.data.audio import SAMPLE_RATE, convert_audio_dir
from sprune.data.datadir import DataDir
from sprune.errors import UserError

Log = Callable[[str], None]

MLS_URL = "https://dl.fbaipublicfiles.com/mls"
MLS_LANGUAGES: dict[str, str] = {"en": "english", "de": "german", "nl": "dutch", "fr": "french",
                                 "es": "spanish", "it": "italian", "pt": "portuguese",
                                 "pl": "polish"}
MLS_TAGS: dict[str, str] = {"en": "en-US", "de": "de-DE", "nl": "nl-NL", "fr": "fr-FR",
                            "es": "es-ES", "it": "it-IT", "pt": "pt-BR", "pl": "pl-PL"}
# SHA-256 of archives checked once by hand can go here (archive name -> digest); MLS itself
# publishes none, so by default nothing is checked beyond unpacking.
MLS_SHA256: dict[str, str] = {}
SPLITS = ("train", "dev", "test")
TRAIN_SETS = ("full", "10min", "1h", "10h")
FOLDS = 6
AUDIO_FORMATS = ("opus", "flac")

_UTT_ID = re.compile(r"^(\d+)_(\d+)_(\d+)$")


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Utterance:
    """One line of a split's transcripts.txt."""

    mls_id: str       # 10065_10039_000000
    speaker: str      # 10065
    book: str         # 10039
    text: str


def language_code(name: str) -> str:
    """'fr', 'FR', 'fr-FR', 'french' -> 'fr'; anything else is a `UserError`."""
    key = name.strip().lower().replace("_", "-")
    if key in MLS_LANGUAGES:
        return key
    by_name = {v: k for k, v in MLS_LANGUAGES.items()}
    if key in by_name:
        return by_name[key]
    if key.split("-")[0] in MLS_LANGUAGES and key == MLS_TAGS[key.split("-")[0]].lower():
        return key.split("-")[0]
    raise UserError(f"MLS has no language '{name}'; use one of "
                    f"{', '.join(MLS_LANGUAGES)} (or {', '.join(MLS_LANGUAGES.values())})")


def archive_name(code: str, audio: str) -> str:
    """'mls_french_opus' / 'mls_french': the archive's (and its top folder's) name."""
    if audio not in AUDIO_FORMATS:
        raise UserError(f"unknown MLS audio format '{audio}'; use {' or '.join(AUDIO_FORMATS)}")
    return f"mls_{MLS_LANGUAGES[code]}" + ("_opus" if audio == "opus" else "")


def train_dir_name(train_set: str, fold: int = 0) -> str:
    """Data dir name of a training set: train, train_10min, train_1h, train_10h
    (a non-zero 10 min fold gets _fold<k>)."""
    check_train_set(train_set, fold)
    if train_set == "full":
        return "train"
    name = f"train_{train_set}"
    return f"{name}_fold{fold}" if train_set == "10min" and fold else name


def check_train_set(train_set: str, fold: int = 0) -> None:
    if train_set not in TRAIN_SETS:
        raise UserError(f"unknown MLS training set '{train_set}'; use one of "
                        f"{', '.join(TRAIN_SETS)}")
    if not 0 <= fold < FOLDS:
        raise UserError(f"MLS limited-supervision fold {fold} does not exist; the 10 min folds "
                        f"are 0..{FOLDS - 1}")


def locate_language(root: str | os.PathLike, code: str, audio: str | None = None
                    ) -> tuple[Path, str]:
    """(`<root>/mls_<language>[_opus]`, its audio format). `audio` None takes the Opus copy
    when both are there; root may also be the language folder itself."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"MLS root {root} does not exist; pass the folder holding "
                        "mls_<language>[_opus]/ (sprune prep mls --root DIR; recipe option "
                        "--mls-root)")
    formats = AUDIO_FORMATS if audio is None else (audio,)
    for fmt in formats:
        name = archive_name(code, fmt)
        if (root / name).is_dir():
            return root / name, fmt
        if root.resolve().name == name:
            return root, fmt
    found = sorted(p.name for p in root.glob("mls_*") if p.is_dir())
    hint = f" (there: {', '.join(found)})" if found else ""
    wanted = " or ".join(archive_name(code, fmt) for fmt in formats)
    raise UserError(f"{root} holds no {wanted}/{hint}; unpack {archive_name(code, formats[0])}"
                    f".tar.gz from openslr.org/94 there, or pass --download")


def read_transcripts(split_dir: Path) -> list[Utterance]:
    """The utterances of `<split_dir>/transcripts.txt`, in file order; a missing file, a
    malformed or repeated line is a `UserError` naming the file and line."""
    path = split_dir / "transcripts.txt"
    if not path.is_file():
        raise UserError(f"{path} is missing; the MLS copy is incomplete, unpack it again")
    utts, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            mls_id, tab, text = line.rstrip("\r\n").partition("\t")
            match = _UTT_ID.match(mls_id.strip())
            if not tab or not match or not text.strip():
                raise UserError(f"{path}:{lineno}: expected '<speaker>_<book>_<n><TAB>words'; "
                                "the MLS copy is damaged, unpack it again")
            if mls_id in seen:
                raise UserError(f"{path}:{lineno}: utterance {mls_id} is listed twice (first "
                                f"at line {seen[mls_id]})")
            seen[mls_id] = lineno
            utts.append(Utterance(mls_id, match[1], match[2], " ".join(text.split())))
    if not utts:
        raise UserError(f"{path} holds no utterances; unpack the MLS copy again")
    return utts


def read_durations(split_dir: Path) -> dict[str, float] | None:
    """Seconds per utterance from `<split_dir>/segments.txt` (end - start), or None when the
    file is absent."""
    path = split_dir / "segments.txt"
    if not path.is_file():
        return None
    durations = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                durations[fields[0]] = float(fields[-1]) - float(fields[-2])
            except (IndexError, ValueError):
                raise UserError(f"{path}:{lineno}: expected '<id> <url> <start> <end>'; the "
                                "MLS copy is damaged") from None
    return durations


def limited_handles(train_dir: Path, train_set: str, fold: int = 0) -> set[str]:
    """The utterance ids of a limited-supervision set ('10min' = fold `fold` of 1hr/, '1h',
    '10h')."""
    check_train_set(train_set, fold)
    base = train_dir / "limited_supervision"
    folds = [fold] if train_set == "10min" else range(FOLDS)
    files = [base / "1hr" / str(k) / "handles.txt" for k in folds]
    if train_set == "10h":
        files.append(base / "9hr" / "handles.txt")
    handles: set[str] = set()
    for path in files:
        if not path.is_file():
            raise UserError(f"{path} is missing; the MLS copy is incomplete, unpack it again")
        handles.update(line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                       if line.strip())
    return handles


def check_limits(max_utts: int | None, max_hours: float | None) -> None:
    if max_utts is not None and max_utts < 1:
        raise UserError(f"--max-utts must be at least 1, got {max_utts}")
    if max_hours is not None and max_hours <= 0:
        raise UserError(f"--max-hours must be positive, got {max_hours}")


def limit_subset(utts: Sequence[Utterance], durations: dict[str, float] | None,
                 max_utts: int | None = None, max_hours: float | None = None,
                 seed: int = 0) -> list[Utterance]:
    """A seeded random subset of `utts` with at most `max_utts` utterances and `max_hours`
    of audio (durations from segments.txt), returned in the input order."""
    check_limits(max_utts, max_hours)
    if max_utts is None and max_hours is None:
        return list(utts)
    if max_hours is not None and durations is None:
        raise UserError("--max-hours needs the durations of segments.txt, which this MLS copy "
                        "lacks; use --max-utts")
    order = list(range(len(utts)))
    random.Random(seed).shuffle(order)
    budget = float("inf") if max_hours is None else max_hours * 3600.0
    kept: set[int] = set()
    for i in order:
        if max_utts is not None and len(kept) >= max_utts:
            break
        seconds = durations.get(utts[i].mls_id, 0.0) if durations is not None else 0.0
        if seconds > budget:
            continue
        budget -= seconds
        kept.add(i)
    return [u for i, u in enumerate(utts) if i in kept]


def _audio_paths(split_dir: Path, utts: Sequence[Utterance], ext: str) -> dict[str, Path]:
    paths = {}
    for u in utts:
        path = split_dir / "audio" / u.speaker / u.book / f"{u.mls_id}.{ext}"
        if not path.is_file():
            raise UserError(f"{path} is missing (listed in {split_dir / 'transcripts.txt'}); "
                            "the MLS copy is incomplete, unpack it again")
        paths[u.mls_id] = path
    return paths


def _check_flac(path: Path) -> None:
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # libsndfile reports corrupt files with several types
        raise UserError(f"cannot decode {path}: {str(err).splitlines()[0]}") from None
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise UserError(f"{path} is {info.samplerate} Hz with {info.channels} channel(s); MLS "
                        "FLAC audio is 16 kHz mono, so this is not MLS")


def prepare_mls(root: str | os.PathLike, out_dir: str | os.PathLike, lang: str,
                splits: Sequence[str] = SPLITS, train_set: str = "full", fold: int = 0,
                max_utts: int | None = None, max_hours: float | None = None, seed: int = 0,
                audio: str | None = None, log: Log = _print) -> dict[str, Path]:
    """Write `<out_dir>/<code>/<dir name>` for each split of one MLS language (see the
    module docstring); returns split -> data dir. Everything is checked before audio is
    converted; each data dir is written in one piece."""
    code = language_code(lang)
    for split in splits:
        if split not in SPLITS:
            raise UserError(f"unknown MLS split '{split}'; use {', '.join(SPLITS)}")
    check_train_set(train_set, fold)
    check_limits(max_utts, max_hours)
    folder, fmt = locate_language(root, code, audio)
    out_dir = Path(out_dir)
    written = {}
    for split in splits:
        split_dir = folder / split
        if not split_dir.is_dir():
            raise UserError(f"{split_dir} not found; the MLS copy under {folder} is incomplete, "
                            "unpack it again")
        utts = read_transcripts(split_dir)
        name = split
        if split == "train" and train_set != "full":
            handles = limited_handles(split_dir, train_set, fold)
            known = {u.mls_id for u in utts}
            unknown = sorted(handles - known)
            if unknown:
                raise UserError(f"{split_dir / 'limited_supervision'}: utterance {unknown[0]} "
                                f"is not in {split_dir / 'transcripts.txt'} ({len(unknown)} "
                                "such); the MLS copy is damaged")
            utts = [u for u in utts if u.mls_id in handles]
            name = train_dir_name(train_set, fold)
        utts = limit_subset(utts, read_durations(split_dir), max_utts, max_hours, seed)
        sources = _audio_paths(split_dir, utts, fmt)
        ids = {u.mls_id: f"{code}-{u.mls_id}" for u in utts}
        if fmt == "flac":
            for path in sources.values():
                _check_flac(path)
            wavs = {ids[m]: str(p.resolve()) for m, p in sources.items()}
        else:
            converted = convert_audio_dir({ids[m]: p for m, p in sources.items()},
                                          out_dir / "audio" / code / name, log, what="clips")
            wavs = {utt: str(path) for utt, path in converted.items()}
        data = DataDir(wav_scp=wavs,
                       utt2spk={ids[u.mls_id]: f"{code}-{u.speaker}" for u in utts},
                       text={ids[u.mls_id]: u.text for u in utts},
                       utt2lang={ids[u.mls_id]: MLS_TAGS[code] for u in utts})
        target = out_dir / code / name
        data.save(target)
        log(f"{target}: MLS {MLS_LANGUAGES[code]} {name} ({fmt}), {len(data)} utterances, "
            f"{len(set(data.utt2spk.values()))} speakers")
        written[split] = target
    return written


def download_mls(dest: str | os.PathLike, lang: str, audio: str = "opus",
                 base_url: str = MLS_URL, log: Log = _print) -> Path:
    """Fetch and unpack one MLS language (`<base_url>/mls_<language>[_opus].tar.gz`) into
    `dest`, unless `dest/mls_<language>[_opus]` is there already; returns `dest`, the root to
    pass to `prepare_mls`. The archive is kept beside it (a broken-off download resumes)."""
    from sprune.data.librispeech import _unpack_tar, fetch_url

    code = language_code(lang)
    name = archive_name(code, audio)
    dest = Path(dest)
    if not (dest / name / "dev").is_dir():
        archive = fetch_url(f"{base_url.rstrip('/')}/{name}.tar.gz", dest / f"{name}.tar.gz",
                            MLS_SHA256.get(name), log)
        _unpack_tar(archive, dest, name, log)
    return dest
