"""MINDS-14 (Gerz et al., 2021): download, unpack and turn into Kaldi data dirs.

The release is one zip, `data/MInDS-14.zip` in the Hugging Face dataset `PolyAI/minds14`
(the same file PolyAI serves at poly-public-data.s3.amazonaws.com/MInDS-14/MInDS-14.zip):

    MInDS-14.zip
      MInDS-14/audio.zip     <lang>~<INTENT>/<recording>.wav     8 kHz telephone speech
      MInDS-14/text.zip      <lang>.csv   header: filepath,text_asr,text_translated_back,intent
      MInDS-14/license.md, MInDS-14/aux-en.csv

`filepath` in a csv is the wav's path inside audio.zip (e.g. `en-US~JOINT_ACCOUNT/602ba55a...wav`)
and `intent` its intent label. `unpack_minds14` extracts everything to
`<dest>/MInDS-14/{audio,text}/` (the layout ESPnet's minds14 recipe also uses); a
`--minds14-root` may point at that folder, at its parent, at the zip, or at a folder holding
the zip or the two inner zips.

Subsets (`SUBSETS`) are the four data sets of paper 000 -- en-US; en-ALL = en-US + en-GB +
en-AU; en-fr = en-US + fr-FR; top7 -- plus `all` and any single language tag. The paper does
not name its Top-7 languages: `top7` takes the seven largest of its Fig. 8 (it-IT 696, en-AU
654, nl-NL 654, de-DE 611, pt-PT 604, en-GB 592, ko-KR 592 utterances).

Intents are written as the snake_case names of the Hugging Face loader, whose integer class
labels index `INTENTS` in that order (a csv holding integers is mapped through it).

Speakers: MINDS-14 ships no speaker ids (recording names are opaque database ids and the
dataset card lists no speaker field). Each recording is therefore its own pseudo-speaker
(`utt2spk` maps an utterance to itself): the train/dev/test split is disjoint in
recordings, stratified by language and intent, and cannot rule out that one caller
recorded utterances in two splits. `speaker_disjoint_split` takes any utt->speaker map, so
a release with real speaker ids would get a truly speaker-disjoint split.
"""
from __future__ import annotations

import csv
import os
import random
import re
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sprune.data.audio import convert_audio_dir
from sprune.data.datadir import DataDir
from sprune.errors import UserError
from sprune.io import atomic_dir

HF_REPO_ID = "PolyAI/minds14"
HF_FILENAME = "data/MInDS-14.zip"

LANGUAGES = ("cs-CZ", "de-DE", "en-AU", "en-GB", "en-US", "es-ES", "fr-FR", "it-IT", "ko-KR",
             "nl-NL", "pl-PL", "pt-PT", "ru-RU", "zh-CN")

# Order matters: integer intent labels (Hugging Face ClassLabel) index this tuple.
INTENTS = ("abroad", "address", "app_error", "atm_limit", "balance", "business_loan",
           "card_issues", "cash_deposit", "direct_debit", "freeze", "high_value_payment",
           "joint_account", "latest_transactions", "pay_bill")

# Paper 000 does not list its "Top-7" languages; these are the seven largest of its Fig. 8
# (it-IT 696, en-AU 654, nl-NL 654, de-DE 611, pt-PT 604, en-GB 592, ko-KR 592).
TOP7 = ("it-IT", "en-AU", "nl-NL", "de-DE", "pt-PT", "en-GB", "ko-KR")

# The four data sets of paper 000, plus every language at once.
SUBSETS: dict[str, tuple[str, ...]] = {
    "en-US": ("en-US",),
    "en-ALL": ("en-US", "en-GB", "en-AU"),
    "en-fr": ("en-US", "fr-FR"),
    "top7": TOP7,
    "all": LANGUAGES,
}

SPLITS = ("train", "dev", "test")
CSV_COLUMNS = ("filepath", "text_asr", "intent")
ROOT_HINT = ("pass the folder holding MInDS-14.zip or its extracted MInDS-14/ "
             "(sprune prep minds14 --root DIR; recipe option --minds14-root)")

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Minds14Utterance:
    """One csv row: where its audio is and what it says."""

    utt_id: str
    lang: str
    intent: str
    text: str
    audio: Path        # the 8 kHz source wav
    speaker: str


def subset_languages(subset: str) -> tuple[str, ...]:
    """Language tags of a subset name: one of `SUBSETS`, or a single language tag."""
    if subset in SUBSETS:
        return SUBSETS[subset]
    if subset in LANGUAGES:
        return (subset,)
    raise UserError(f"unknown MINDS-14 subset '{subset}'; use one of {', '.join(SUBSETS)} "
                    f"or a language tag ({', '.join(LANGUAGES)})")


# ----------------------------------------------------------------------------- unpacking

def _extract_inner(archive: zipfile.ZipFile, member: str, target: Path) -> None:
    """Extract the zip `member` of `archive` (a zip inside a zip) into `target`."""
    with archive.open(member) as src, open(target.with_suffix(".zip.part"), "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    _extract_zip(target.with_suffix(".zip.part"), target)
    target.with_suffix(".zip.part").unlink()


def _extract_zip(path: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)  # zipfile drops absolute and '..' parts of names
    except zipfile.BadZipFile as err:
        raise UserError(f"{path} is not a valid zip ({err}); download it again") from None


def _find_member(names: list[str], basename: str) -> str | None:
    """The member `basename` at the top of the archive or one folder down."""
    for name in names:
        parts = name.rstrip("/").split("/")
        if parts[-1] == basename and len(parts) <= 2:
            return name
    return None


def unpack_minds14(source: str | os.PathLike, dest: str | os.PathLike, log: Log = _print) -> Path:
    """Extract MInDS-14 into `dest/MInDS-14/{audio,text}` and return that folder.

    `source` is MInDS-14.zip or a folder holding the inner audio.zip and text.zip. The
    folder appears complete or not at all; an existing complete one is reused.
    """
    source, final = Path(source), Path(dest) / "MInDS-14"
    if (final / "audio").is_dir() and (final / "text").is_dir():
        return final
    log(f"unpacking {source} into {final}")
    with atomic_dir(final) as tmp:
        if source.is_dir():
            for part in ("audio", "text"):
                inner = source / f"{part}.zip"
                if not inner.is_file():
                    raise UserError(f"{inner} not found; {ROOT_HINT}")
                _extract_zip(inner, tmp / part)
            for extra in ("license.md", "aux-en.csv"):
                if (source / extra).is_file():
                    shutil.copy2(source / extra, tmp / extra)
        else:
            try:
                archive = zipfile.ZipFile(source)
            except (zipfile.BadZipFile, OSError) as err:
                raise UserError(f"cannot open {source} as a zip ({err}); download it again") from None
            with archive:
                names = archive.namelist()
                for part in ("audio", "text"):
                    member = _find_member(names, f"{part}.zip")
                    if member is None:
                        raise UserError(f"{source} holds no MInDS-14/{part}.zip; it is not the "
                                        "MINDS-14 release (data/MInDS-14.zip of PolyAI/minds14)")
                    _extract_inner(archive, member, tmp / part)
                for extra in ("license.md", "aux-en.csv"):
                    member = _find_member(names, extra)
                    if member is not None:
                        (tmp / extra).write_bytes(archive.read(member))
    return final


def locate_minds14(root: str | os.PathLike, scratch: str | os.PathLike, log: Log = _print) -> Path:
    """The folder holding `text/<lang>.csv` and `audio/`, unpacking zips into `scratch`.

    `root` may be that folder, its parent, MInDS-14.zip, a folder holding MInDS-14.zip, or a
    folder holding the inner audio.zip and text.zip.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"MINDS-14 root {root} does not exist; {ROOT_HINT}")
    if root.is_file():
        return unpack_minds14(root, scratch, log)
    candidates = [root / "MInDS-14", root]
    for folder in candidates:
        if (folder / "text").is_dir() and (folder / "audio").is_dir():
            return folder
    for folder in candidates:
        if (folder / "text.zip").is_file() and (folder / "audio.zip").is_file():
            return unpack_minds14(folder, scratch, log)
    for zip_path in (root / "MInDS-14.zip", root / "data" / "MInDS-14.zip"):
        if zip_path.is_file():
            return unpack_minds14(zip_path, scratch, log)
    raise UserError(f"no MINDS-14 under {root}: expected {root / 'MInDS-14' / 'text'}/<lang>.csv "
                    f"and {root / 'MInDS-14' / 'audio'}/, or {root / 'MInDS-14.zip'}; {ROOT_HINT}")


# ----------------------------------------------------------------------------- reading

def normalize_intent(label: str) -> str | None:
    """Map a csv intent ('JOINT_ACCOUNT', 'joint account', 'app-error' or '11') to its
    snake_case name in `INTENTS`; None when it is not one of the 14."""
    label = label.strip()
    if label.isdigit():
        index = int(label)
        return INTENTS[index] if index < len(INTENTS) else None
    name = re.sub(r"[\s\-]+", "_", label.lower())
    return name if name in INTENTS else None


def _safe_token(text: str) -> str:
    """Keep an id Kaldi-safe: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def read_minds14_language(folder: Path, lang: str) -> tuple[list[Minds14Utterance], int]:
    """The utterances of one language csv and how many rows had an empty transcript.

    Rows with an empty `text_asr` are left out (a data dir may not hold empty
    transcripts). A bad header, an unknown intent or a missing wav is a `UserError`.
    """
    csv_path = folder / "text" / f"{lang}.csv"
    if not csv_path.is_file():
        raise UserError(f"{csv_path} not found; the MINDS-14 copy under {folder} is incomplete "
                        f"or is not MINDS-14 ({ROOT_HINT})")
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    if not rows:
        raise UserError(f"{csv_path} is empty; unpack MINDS-14 again")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise UserError(f"{csv_path}:1: header lacks column '{missing[0]}'; expected "
                        "filepath,text_asr,text_translated_back,intent")
    col = {name: header.index(name) for name in CSV_COLUMNS}
    utts: list[Minds14Utterance] = []
    seen: dict[str, int] = {}
    empty = 0
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise UserError(f"{csv_path}:{lineno}: {len(row)} fields, expected {len(header)}")
        rel_path = row[col["filepath"]].strip()
        intent = normalize_intent(row[col["intent"]])
        if intent is None:
            raise UserError(f"{csv_path}:{lineno}: unknown intent '{row[col['intent']]}'; "
                            f"MINDS-14 intents are {', '.join(INTENTS)}")
        text = " ".join(row[col["text_asr"]].split())
        if not text:
            empty += 1
            continue
        audio = folder / "audio" / Path(*rel_path.split("/"))
        if not audio.is_file():
            raise UserError(f"{csv_path}:{lineno}: audio {audio} is missing; unpack audio.zip of "
                            "MINDS-14 into " + str(folder / "audio"))
        utt_id = _safe_token(f"{lang}_{intent}_{Path(rel_path).stem}")
        if utt_id in seen:
            raise UserError(f"{csv_path}:{lineno}: recording '{rel_path}' is listed twice "
                            f"(first at line {seen[utt_id]})")
        seen[utt_id] = lineno
        utts.append(Minds14Utterance(utt_id=utt_id, lang=lang, intent=intent, text=text,
                                     audio=audio, speaker=utt_id))
    return utts, empty


# ----------------------------------------------------------------------------- splitting

def speaker_disjoint_split(utt2spk: dict[str, str], utt2stratum: dict[str, str], seed: int,
                           dev_frac: float = 0.1, test_frac: float = 0.1) -> dict[str, list[str]]:
    """Split utterances into train/dev/test so that no speaker is in two splits.

    Speakers are shuffled (deterministically for `seed`) inside each stratum (a speaker's
    most frequent `utt2stratum` value, e.g. language+intent); ordering them by their relative
    rank in their stratum and cutting that order at the dev/test utterance targets gives each
    split a share of every stratum. dev and test get at least one speaker each when their
    fraction is positive. Returns split name -> sorted utterance ids.
    """
    if not (0 <= dev_frac < 1 and 0 <= test_frac < 1 and dev_frac + test_frac < 1):
        raise UserError(f"dev/test fractions {dev_frac}/{test_frac} are invalid: each must be in "
                        "[0, 1) and together below 1 (e.g. --dev-frac 0.1 --test-frac 0.1)")
    spk2utts: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    needed = 1 + (dev_frac > 0) + (test_frac > 0)
    if len(spk2utts) < needed:
        raise UserError(f"only {len(spk2utts)} speaker(s): too few for a train/dev/test split; "
                        "add data or set the dev/test fraction to 0")
    strata: dict[str, list[str]] = {}
    for spk, utts in sorted(spk2utts.items()):
        counts = Counter(utt2stratum[u] for u in utts)
        stratum = min(counts, key=lambda s: (-counts[s], s))
        strata.setdefault(stratum, []).append(spk)
    rng = random.Random(seed)
    order_key: dict[str, tuple[float, float]] = {}
    for stratum in sorted(strata):
        speakers = strata[stratum]
        rng.shuffle(speakers)
        for rank, spk in enumerate(speakers):
            order_key[spk] = ((rank + 0.5) / len(speakers), rng.random())
    order = sorted(order_key, key=order_key.__getitem__)

    total = len(utt2spk)
    targets = {"test": max(1, round(total * test_frac)) if test_frac > 0 else 0,
               "dev": max(1, round(total * dev_frac)) if dev_frac > 0 else 0}
    phases = [name for name in ("test", "dev") if targets[name]] + ["train"]
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    filled = {name: 0 for name in SPLITS}
    phase = 0
    for index, spk in enumerate(order):
        remaining = len(order) - index
        # Move on once a split has its share, or when the speakers left are just enough to
        # give every later split one.
        while phases[phase] != "train" and (
                filled[phases[phase]] >= targets[phases[phase]]
                or (filled[phases[phase]] > 0 and remaining <= len(phases) - phase - 1)):
            phase += 1
        out[phases[phase]].extend(spk2utts[spk])
        filled[phases[phase]] += len(spk2utts[spk])
    return {name: sorted(utts) for name, utts in out.items()}


# ----------------------------------------------------------------------------- writing

def write_language_audio(utts: list[Minds14Utterance], audio_dir: Path,
                         log: Log = _print) -> dict[str, Path]:
    """Resample the 8 kHz recordings of one language to 16 kHz 16-bit WAVs in `audio_dir`
    (once: a folder whose MANIFEST matches `utts` is reused). Returns utt id -> wav path."""
    return convert_audio_dir({u.utt_id: u.audio for u in utts}, audio_dir, log)


def prepare_minds14(root: str | os.PathLike, out_dir: str | os.PathLike, subset: str = "en-US",
                    seed: int = 0, dev_frac: float = 0.1, test_frac: float = 0.1,
                    scratch: str | os.PathLike | None = None,
                    log: Log = _print) -> dict[str, DataDir]:
    """Build `out_dir/<subset>/{train,dev,test}` from a local MINDS-14 copy.

    Audio is resampled once per language into `out_dir/audio/<lang>/` (16 kHz, 16-bit WAV)
    and shared by every subset. Data dirs hold text (the ASR transcript `text_asr`),
    utt2lang, utt2intent and utt2spk (pseudo-speakers, see the module docstring). Zips found
    at `root` are unpacked into `scratch` (default `out_dir/downloads`).
    Returns split name -> the saved DataDir.
    """
    langs = subset_languages(subset)
    out_dir = Path(out_dir)
    folder = locate_minds14(root, scratch if scratch is not None else out_dir / "downloads", log)
    utts: list[Minds14Utterance] = []
    wav_paths: dict[str, Path] = {}
    for lang in langs:
        lang_utts, empty = read_minds14_language(folder, lang)
        if not lang_utts:
            raise UserError(f"{folder / 'text' / (lang + '.csv')} lists no usable utterance")
        note = f" ({empty} with an empty transcript left out)" if empty else ""
        log(f"{lang}: {len(lang_utts)} utterances{note}")
        wav_paths.update(write_language_audio(lang_utts, out_dir / "audio" / lang, log))
        utts.extend(lang_utts)
    by_id = {u.utt_id: u for u in utts}
    splits = speaker_disjoint_split({u.utt_id: u.speaker for u in utts},
                                    {u.utt_id: f"{u.lang}/{u.intent}" for u in utts},
                                    seed=seed, dev_frac=dev_frac, test_frac=test_frac)
    result: dict[str, DataDir] = {}
    with atomic_dir(out_dir / subset) as tmp:  # the three splits appear together
        for name in SPLITS:
            chosen = [by_id[i] for i in splits[name]]
            if not chosen:
                continue
            result[name] = DataDir(wav_scp={u.utt_id: str(wav_paths[u.utt_id]) for u in chosen},
                                   utt2spk={u.utt_id: u.speaker for u in chosen},
                                   text={u.utt_id: u.text for u in chosen},
                                   utt2lang={u.utt_id: u.lang for u in chosen},
                                   utt2intent={u.utt_id: u.intent for u in chosen})
            result[name].save(tmp / name)
    for name, data in result.items():
        data.path = out_dir / subset / name
        log(f"wrote {data.path}: {len(data)} utterances, "
            f"{len(set(data.utt2lang.values()))} language(s)")
    return result


# ----------------------------------------------------------------------------- download

def download_minds14(dest: str | os.PathLike, log: Log = _print) -> Path:
    """Fetch data/MInDS-14.zip of the Hugging Face dataset PolyAI/minds14 into `dest` and
    unpack it; returns the folder to pass as the MINDS-14 root.

    Without network access this is a `UserError` telling the user to pass a local copy.
    """
    dest = Path(dest)
    done = dest / "MInDS-14"
    if (done / "audio").is_dir() and (done / "text").is_dir():
        log(f"MINDS-14 already unpacked in {done}")
        return done
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError("huggingface_hub is not installed, so MINDS-14 cannot be downloaded; "
                        "run `make install`, or pass a local copy with --minds14-root DIR") from None
    log(f"downloading {HF_FILENAME} of the Hugging Face dataset {HF_REPO_ID} into {dest}")
    try:
        zip_path = hf_hub_download(repo_id=HF_REPO_ID, repo_type="dataset",
                                   filename=HF_FILENAME, local_dir=str(dest))
    except (OSError, ValueError) as err:
        # requests' connection errors, the hub's offline/HTTP errors and a missing cache
        # entry all derive from OSError or ValueError.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot download MINDS-14 from the Hugging Face Hub ({reason}); "
                        f"get {HF_FILENAME} of huggingface.co/datasets/{HF_REPO_ID} on a machine "
                        "with network access and pass the folder holding it with "
                        "--minds14-root DIR") from None
    return unpack_minds14(zip_path, dest, log)


__all__ = ["HF_FILENAME", "HF_REPO_ID", "INTENTS", "LANGUAGES", "SUBSETS", "TOP7",
           "Minds14Utterance", "download_minds14", "locate_minds14", "normalize_intent",
           "prepare_minds14", "read_minds14_language", "speaker_disjoint_split",
           "subset_languages", "unpack_minds14", "write_language_audio"]
