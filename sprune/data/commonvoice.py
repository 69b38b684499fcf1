"""Mozilla Common Voice releases as Kaldi data dirs (paper 001's H2L / CSR languages).

A release (e.g. `cv-corpus-15.0-2023-09-08/`, downloaded by hand from
commonvoice.mozilla.org: it needs a sign-in) holds one folder per locale:

    <root>/<locale>/{train,dev,test,validated,...}.tsv
    <root>/<locale>/clips/common_voice_<locale>_<n>.mp3

Each TSV has a header line and tab-separated columns, among them `client_id` (an anonymous
speaker hash), `path` (the clip's file name in clips/) and `sentence`. Fields are never
quoted, so a `"` in a sentence is part of it.

`prepare_commonvoice` reads the official train / dev / test splits (speaker-disjoint) and
writes `<out>/<locale>/<split>/` with wav.scp, text (the sentence as written), utt2spk,
spk2utt and utt2lang (the locale). The clips are MP3 at 32 or 48 kHz; data dirs hold 16 kHz
mono, so every clip is decoded once with soundfile (libsndfile >= 1.1 reads MP3), resampled
and written as a 16-bit WAV under `<out>/audio/<locale>/<split>/` (reused on a re-run when
its MANIFEST matches). Speaker ids are `<locale>-<first 16 hex digits of client_id>`;
utterance ids put the speaker first, as Kaldi expects. Rows with an empty sentence are
dropped and counted. `train_hours` keeps a deterministic random subset of the training
clips up to that much audio (paper 001 fine-tunes on 1 h per language).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from sprune.data.audio import audio_info, convert_audio_dir
from sprune.data.datadir import DataDir
from sprune.errors import UserError

Log = Callable[[str], None]

SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Clip:
    """One row of a Common Voice split."""

    utt_id: str
    speaker: str
    sentence: str
    mp3: Path


def locale_dir(root: str | Path, locale: str) -> Path:
    """`<root>/<locale>`, checked to look like a Common Voice locale folder."""
    folder = Path(root) / locale
    if not folder.is_dir():
        found = sorted(p.name for p in Path(root).iterdir() if (p / "clips").is_dir()) \
            if Path(root).is_dir() else []
        hint = f" (locales there: {', '.join(found)})" if found else ""
        raise UserError(f"{folder} does not exist{hint}; give --root the release folder "
                        "holding <locale>/{train,dev,test}.tsv and <locale>/clips/")
    return folder


def read_split(folder: Path, split: str, locale: str) -> tuple[list[Clip], int]:
    """The clips of `<folder>/<split>.tsv` and the number of rows dropped for an empty
    sentence. A missing file, column or clip is a `UserError` naming the file and line."""
    tsv = folder / f"{split}.tsv"
    if not tsv.is_file():
        raise UserError(f"{tsv} is missing; a Common Voice locale folder has train.tsv, "
                        "dev.tsv and test.tsv")
    lines = tsv.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise UserError(f"{tsv} is empty; expected a header line (client_id, path, sentence, ...)")
    header = lines[0].split("\t")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{tsv}:1: no column {', '.join(missing)} in the header; is this a "
                        "Common Voice TSV?")
    index = {name: header.index(name) for name in REQUIRED_COLUMNS}
    clips, dropped, seen = [], 0, set()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < len(header):
            raise UserError(f"{tsv}:{lineno}: {len(fields)} fields, the header has "
                            f"{len(header)}; the file is damaged")
        sentence = " ".join(fields[index["sentence"]].split())
        if not sentence:
            dropped += 1
            continue
        name = fields[index["path"]]
        mp3 = folder / "clips" / name
        if not mp3.is_file():
            raise UserError(f"{tsv}:{lineno}: clip {mp3} does not exist; is clips/ complete?")
        speaker = f"{locale}-{_SAFE.sub('', fields[index['client_id']])[:16] or 'unknown'}"
        utt = f"{speaker}-{_SAFE.sub('_', Path(name).stem)}"
        if utt in seen:
            raise UserError(f"{tsv}:{lineno}: clip {name} is listed twice")
        seen.add(utt)
        clips.append(Clip(utt, speaker, sentence, mp3))
    return clips, dropped


def limit_hours(clips: Sequence[Clip], hours: float, seed: int = 0) -> list[Clip]:
    """A random subset (fixed by `seed`) of `clips` holding at most `hours` of audio,
    durations read from the MP3 headers; returned in the input order."""
    if hours <= 0:
        raise UserError(f"--train-hours must be positive, got {hours}")
    order = list(range(len(clips)))
    random.Random(seed).shuffle(order)
    budget, kept = hours * 3600.0, set()
    for i in order:
        seconds = audio_info(str(clips[i].mp3)).seconds
        if seconds > budget:
            continue
        budget -= seconds
        kept.add(i)
    return [clip for i, clip in enumerate(clips) if i in kept]


def prepare_commonvoice(root: str | Path, out_dir: str | Path, locale: str,
                        splits: Sequence[str] = SPLITS, train_hours: float | None = None,
                        seed: int = 0, log: Log = _print) -> dict[str, Path]:
    """Write `<out_dir>/<locale>/<split>` for each split; returns split -> data dir."""
    for split in splits:
        if split not in SPLITS:
            raise UserError(f"unknown Common Voice split '{split}'; use {', '.join(SPLITS)}")
    folder = locale_dir(root, locale)
    out_dir = Path(out_dir)
    written = {}
    for split in splits:
        clips, dropped = read_split(folder, split, locale)
        if split == "train" and train_hours is not None:
            clips = limit_hours(clips, train_hours, seed)
        if not clips:
            raise UserError(f"{folder / (split + '.tsv')}: no clips with a sentence; nothing to "
                            "prepare")
        paths = convert_audio_dir({c.utt_id: c.mp3 for c in clips},
                                  out_dir / "audio" / locale / split, log, what="clips")
        data = DataDir(wav_scp={c.utt_id: str(paths[c.utt_id]) for c in clips},
                       utt2spk={c.utt_id: c.speaker for c in clips},
                       text={c.utt_id: c.sentence for c in clips},
                       utt2lang={c.utt_id: locale for c in clips})
        target = out_dir / locale / split
        data.save(target)
        note = f", {dropped} rows without a sentence dropped" if dropped else ""
        log(f"{target}: {len(clips)} utterances, {len(set(data.utt2spk.values()))} speakers{note}")
        written[split] = target
    return written
