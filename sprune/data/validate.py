"""Check a Kaldi data dir and report every problem found, each with its file and line.

`DataDir.load` stops at the first structural problem; `validate_data_dir` keeps going so a
user can fix a broken dir in one pass. What it checks:

- the required files (wav.scp, utt2spk) exist and every file is valid UTF-8;
- per file: empty lines, lines with no value, duplicate ids, C (byte) order of the ids,
  empty transcripts in `text`, multi-word values where one token is expected;
- across files: every utterance of wav.scp is in text / utt2spk / utt2lang / utt2intent and
  no file has extra ids; spk2utt (when present) agrees with utt2spk;
- audio (unless `check_audio=False`): the file or archive entry exists, decodes, is
  16 kHz (sprune rejects other rates: prep resamples when it writes), mono, not empty and
  not cut short: a WAV's data chunk must hold the bytes its header declares (read from the
  RIFF header, no decoding), other formats are decoded once and must yield the frames their
  header promises.

Utterance ids that do not start with their speaker id are reported once, as a warning:
Kaldi recommends the prefix (so sorting by utterance also groups speakers) but does not
require it.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from sprune.data.audio import SAMPLE_RATE, AudioInfo, audio_info, entry_kind
from sprune.data.datadir import UTT_FILES
from sprune.errors import UserError

REQUIRED_FILES = ("wav.scp", "utt2spk")
# Files whose value must be a single token.
SINGLE_TOKEN_FILES = ("utt2spk", "utt2lang", "utt2intent")
# Show a progress bar for audio checks on dirs larger than this.
PROGRESS_MIN_UTTS = 200

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding: `file` (a path), `line` (1-based, or None for the whole file), `message`.

    `level` is "error" (the dir is unusable as is) or "warning" (a Kaldi recommendation).
    """

    file: str
    line: int | None
    message: str
    level: str = ERROR

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        prefix = "warning: " if self.level == WARNING else ""
        return f"{where}: {prefix}{self.message}"


@dataclass
class _Table:
    """A table file as read for validation: first line of each id, in file order."""

    path: Path
    first_line: dict[str, int]   # id -> line number of its first occurrence
    values: dict[str, str]       # id -> value of its first occurrence


def _read_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str]]:
    """Lines of `path` without newline; undecodable lines are reported and skipped."""
    out = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                out.append((lineno, raw.decode("utf-8").rstrip("\r\n")))
            except UnicodeDecodeError:
                problems.append(Problem(str(path), lineno, "not valid UTF-8; re-encode the file as UTF-8"))
    return out


def _check_table(path: Path, problems: list[Problem]) -> _Table:
    """Per-file checks of a `<id> <value>` table; returns what later checks need."""
    name = path.name
    table = _Table(path=path, first_line={}, values={})
    previous: str | None = None
    unsorted_at: int | None = None
    for lineno, line in _read_lines(path, problems):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            problems.append(Problem(str(path), lineno, "empty line; remove it"))
            continue
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value:
            if name == "text":
                problems.append(Problem(str(path), lineno, f"empty transcript for '{key}'; "
                                        "give its words or remove the utterance"))
            else:
                problems.append(Problem(str(path), lineno, f"'{key}' has no value; "
                                        f"each line must be '<id> <value>'"))
        elif name in SINGLE_TOKEN_FILES and len(value.split()) > 1:
            problems.append(Problem(str(path), lineno, f"value '{value}' of '{key}' must be one "
                                    "token (no spaces)"))
        if key in table.first_line:
            problems.append(Problem(str(path), lineno, f"duplicate id '{key}' (first at line "
                                    f"{table.first_line[key]}); ids must be unique"))
            continue
        if previous is not None and key < previous and unsorted_at is None:
            unsorted_at = lineno
            problems.append(Problem(str(path), lineno, f"not sorted: '{key}' comes after "
                                    f"'{previous}'; sort the file with `LC_ALL=C sort`"))
        previous = key
        table.first_line[key] = lineno
        table.values[key] = value
    return table


def _check_spk2utt(path: Path, utt2spk: _Table | None, problems: list[Problem]) -> None:
    """spk2utt must list exactly the utterances of each speaker in utt2spk."""
    spk_table = _check_table(path, problems)
    seen: dict[str, int] = {}
    for spk, lineno in spk_table.first_line.items():
        for utt in spk_table.values[spk].split():
            if utt in seen:
                problems.append(Problem(str(path), lineno, f"utterance '{utt}' is listed again "
                                        f"(first at line {seen[utt]})"))
                continue
            seen[utt] = lineno
            if utt2spk is None:
                continue
            if utt not in utt2spk.values:
                problems.append(Problem(str(path), lineno, f"utterance '{utt}' of speaker '{spk}' "
                                        "is not in utt2spk; regenerate spk2utt from utt2spk"))
            elif utt2spk.values[utt] != spk:
                problems.append(Problem(str(path), lineno, f"utterance '{utt}' is under speaker "
                                        f"'{spk}' but utt2spk says '{utt2spk.values[utt]}' "
                                        f"(line {utt2spk.first_line[utt]}); regenerate spk2utt"))
    if utt2spk is None:
        return
    for utt, lineno in utt2spk.first_line.items():
        if utt not in seen and utt2spk.values[utt]:
            problems.append(Problem(str(path), None, f"no entry for utterance '{utt}' "
                                    f"(utt2spk line {lineno}); regenerate spk2utt from utt2spk"))


def _check_cross_files(reference: _Table, tables: dict[str, _Table],
                       problems: list[Problem]) -> None:
    """Every id of `reference` (wav.scp) must be in each other file, and no file has extras."""
    ref_name = reference.path.name
    for name, table in tables.items():
        if table is reference:
            continue
        for utt, lineno in reference.first_line.items():
            if utt not in table.first_line:
                problems.append(Problem(str(table.path), None, f"no entry for utterance '{utt}' "
                                        f"({ref_name} line {lineno}); add it or remove the utterance"))
        for utt, lineno in table.first_line.items():
            if utt not in reference.first_line:
                problems.append(Problem(str(table.path), lineno, f"utterance '{utt}' is not in "
                                        f"{ref_name}; remove the line or add its audio"))


def _check_speaker_prefix(utt2spk: _Table, problems: list[Problem]) -> None:
    bad = [(utt, line) for utt, line in utt2spk.first_line.items()
           if utt2spk.values[utt] and not utt.startswith(utt2spk.values[utt])]
    if bad:
        utt, line = bad[0]
        problems.append(Problem(str(utt2spk.path), line, f"{len(bad)} utterance id(s) do not start "
                                f"with their speaker id (first: '{utt}'); Kaldi recommends the "
                                "prefix so that sorting by utterance keeps speakers together",
                                level=WARNING))


def _wav_data_frames(path: str) -> tuple[int, int] | None:
    """(frames the data chunk declares, frames the file holds) of a RIFF/WAVE file.

    Only the chunk headers are read. None when `path` is not a RIFF/WAVE file, has no data
    chunk, or declares a streaming size (0 or 0xFFFFFFFF: writers that cannot seek back).
    libsndfile silently shortens a cut WAV to the bytes present, so its frame count cannot
    tell; the declared size can.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        block_align = 1
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"fmt " and chunk_size >= 14:
                block_align = max(1, struct.unpack("<12xH", f.read(14))[0])
            elif chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                return chunk_size // block_align, max(0, size - pos - 8) // block_align
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _decoded_frames(path: str) -> tuple[int, str]:
    """Frames soundfile actually decodes from `path` (in blocks, no copy kept) and the
    decoder's error, if it stopped on one ("" otherwise)."""
    import soundfile

    count = 0
    try:
        with soundfile.SoundFile(path) as f:
            while True:
                block = f.read(1 << 16, dtype="int16")
                if not len(block):
                    break
                count += len(block)
    except Exception as err:  # libsndfile reports corrupt data with several types
        return count, str(err).splitlines()[0] if str(err) else type(err).__name__
    return count, ""


def _truncation(entry: str, info: AudioInfo) -> str | None:
    """Why the plain audio file `entry` is cut short, or None when it holds every frame its
    header promises. Archive entries and pipes are decoded whole by `audio_info` already."""
    if entry_kind(entry) != "file":
        return None
    fix = "re-create or re-download the file"
    declared = _wav_data_frames(entry)
    if declared is not None:
        promised, present = declared
        if present < promised:
            return (f"audio file {entry} is truncated: its header declares {promised} frames but "
                    f"only {present} are in the file; {fix}")
        return None
    if not 0 < info.frames < 1 << 62:  # unknown length (some streamed formats)
        return None
    decoded, error = _decoded_frames(entry)
    if decoded < info.frames or error:
        why = f" ({error})" if error else ""
        return (f"audio file {entry} is truncated or corrupt: its header declares {info.frames} "
                f"frames but only {decoded} decode{why}; {fix}")
    return None


def _check_audio(wav_scp: _Table, problems: list[Problem]) -> None:
    from tqdm import tqdm

    entries = [(utt, wav_scp.first_line[utt], value) for utt, value in wav_scp.values.items() if value]
    path = str(wav_scp.path)
    for utt, lineno, entry in tqdm(entries, desc=f"checking audio of {wav_scp.path.parent}",
                                   unit="utt", disable=len(entries) <= PROGRESS_MIN_UTTS,
                                   leave=False):
        try:
            info = audio_info(entry)
        except UserError as err:
            problems.append(Problem(path, lineno, f"'{utt}': {err}"))
            continue
        if info.rate != SAMPLE_RATE:
            problems.append(Problem(path, lineno, f"'{utt}' is sampled at {info.rate} Hz; data dirs "
                                    f"must be {SAMPLE_RATE} Hz (resample it when preparing the data)"))
        if info.channels != 1:
            problems.append(Problem(path, lineno, f"'{utt}' has {info.channels} channels; data dirs "
                                    "must be mono (mix down or pick a channel when preparing)"))
        truncated = _truncation(entry, info)
        if truncated:
            problems.append(Problem(path, lineno, f"'{utt}': {truncated}"))
        elif info.frames == 0:
            problems.append(Problem(path, lineno, f"'{utt}' holds no samples; remove the utterance"))


def validate_data_dir(path: str | os.PathLike, check_audio: bool = True) -> list[Problem]:
    """Every problem of the data dir at `path`, errors and warnings, in file order.

    Relative audio paths in wav.scp are resolved from the current directory, as in Kaldi.
    Returns an empty list for a clean dir.
    """
    path = Path(path)
    problems: list[Problem] = []
    if not path.is_dir():
        return [Problem(str(path), None, "data dir does not exist; run the recipe's data stage first")]
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            problems.append(Problem(str(path / name), None, "required file is missing; a data dir "
                                    "needs wav.scp and utt2spk"))
    tables = {name: _check_table(path / name, problems)
              for name in UTT_FILES if (path / name).is_file()}
    reference = tables.get("wav.scp") or tables.get("utt2spk")
    if reference is not None:
        _check_cross_files(reference, tables, problems)
    if (path / "spk2utt").is_file():
        _check_spk2utt(path / "spk2utt", tables.get("utt2spk"), problems)
    if "utt2spk" in tables:
        _check_speaker_prefix(tables["utt2spk"], problems)
    if check_audio and "wav.scp" in tables:
        _check_audio(tables["wav.scp"], problems)
    return _in_file_order(problems, path)


def _in_file_order(problems: Iterable[Problem], path: Path) -> list[Problem]:
    """Group by file (wav.scp, text, utt2spk, ... order), then by line; whole-file notes last."""
    order = {str(path / name): i for i, name in enumerate(UTT_FILES + ("spk2utt",))}
    return sorted(problems, key=lambda p: (order.get(p.file, len(order)),
                                           p.line if p.line is not None else float("inf")))


def count_errors(problems: Iterable[Problem]) -> int:
    """Number of error-level problems (warnings do not make a dir invalid)."""
    return sum(1 for p in problems if p.level == ERROR)
