"""Kaldi-style data directories: read and write.

A data dir holds one utterance per line in each file, keyed by utterance id, sorted in C
(byte) order, as Kaldi's `utils/validate_data_dir.sh` expects:

    wav.scp     <utt> <path.wav>  |  <utt> <file.ark>:<offset>  |  <utt> <command> |
    text        <utt> <transcript>                 (optional)
    utt2spk     <utt> <speaker>
    spk2utt     <speaker> <utt> <utt> ...          (derived from utt2spk on write)
    utt2lang    <utt> <language tag, e.g. en-US>   (optional)
    utt2intent  <utt> <intent label>               (optional)

Audio in a data dir must be 16 kHz mono; prep scripts resample when they write it
(see `sprune.data.audio`). Validation of a dir lives in `sprune.data.validate`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sprune.errors import UserError
from sprune.io import atomic_dir

# Files holding one value per utterance, in the order they are written.
UTT_FILES = ("wav.scp", "text", "utt2spk", "utt2lang", "utt2intent")
OPTIONAL_UTT_FILES = ("text", "utt2lang", "utt2intent")


def read_table(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """Read a Kaldi table file as (line number, key, rest-of-line) triples, in file order.

    Empty lines are returned with key "". The value is the rest of the line after the first
    run of whitespace, trailing whitespace stripped (it may be "").
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            parts = line.strip().split(maxsplit=1)
            key = parts[0] if parts else ""
            value = parts[1].rstrip() if len(parts) > 1 else ""
            rows.append((lineno, key, value))
    return rows


def read_mapping(path: str | os.PathLike) -> dict[str, str]:
    """Read a table file into a dict, strictly: a duplicate key or a line with no value is a
    `UserError` naming the file and line (run `sprune data validate` for every problem)."""
    out: dict[str, str] = {}
    for lineno, key, value in read_table(path):
        if not key:
            raise UserError(f"{path}:{lineno}: empty line; remove it")
        if key in out:
            raise UserError(f"{path}:{lineno}: duplicate id '{key}'; ids must be unique")
        out[key] = value
    return out


def write_mapping(path: str | os.PathLike, mapping: dict[str, str]) -> None:
    """Write a dict as a table file sorted by key in C order (call inside an atomic dir)."""
    with open(path, "w", encoding="utf-8") as f:
        for key in sorted(mapping):
            f.write(f"{key} {mapping[key]}\n")


@dataclass
class DataDir:
    """An in-memory Kaldi data dir. All per-utterance dicts share the keys of `wav_scp`."""

    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    text: dict[str, str] | None = None
    utt2lang: dict[str, str] | None = None
    utt2intent: dict[str, str] | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids in C order."""
        return sorted(self.wav_scp)

    def __len__(self) -> int:
        return len(self.wav_scp)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt in self.utt_ids:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return out

    def tables(self) -> dict[str, dict[str, str] | None]:
        """File name -> mapping, for the per-utterance files (None when absent)."""
        return {"wav.scp": self.wav_scp, "text": self.text, "utt2spk": self.utt2spk,
                "utt2lang": self.utt2lang, "utt2intent": self.utt2intent}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DataDir":
        """Read a data dir. `wav.scp` and `utt2spk` are required; others are optional.

        Raises `UserError` for a missing dir or required file, and for structural problems
        (duplicate ids, ids missing from one file). Audio is not opened here.
        """
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"data dir {path} does not exist; run the recipe's data stage first")
        tables: dict[str, dict[str, str] | None] = {}
        for name in UTT_FILES:
            file = path / name
            if file.is_file():
                tables[name] = read_mapping(file)
            elif name in OPTIONAL_UTT_FILES:
                tables[name] = None
            else:
                raise UserError(f"{file} is missing; a data dir needs wav.scp and utt2spk")
        utts = set(tables["wav.scp"])
        for name, table in tables.items():
            if table is None:
                continue
            missing = sorted(utts - set(table))
            extra = sorted(set(table) - utts)
            if missing:
                raise UserError(f"{path / name}: no entry for utterance '{missing[0]}' "
                                f"({len(missing)} missing); run `sprune data validate {path}`")
            if extra:
                raise UserError(f"{path / name}: utterance '{extra[0]}' is not in wav.scp "
                                f"({len(extra)} extra); run `sprune data validate {path}`")
        return cls(wav_scp=tables["wav.scp"], utt2spk=tables["utt2spk"], text=tables["text"],
                   utt2lang=tables["utt2lang"], utt2intent=tables["utt2intent"], path=path)

    def save(self, path: str | os.PathLike) -> None:
        """Write the dir atomically (all files sorted, spk2utt derived from utt2spk)."""
        with atomic_dir(path) as tmp:
            for name, table in self.tables().items():
                if table is not None:
                    write_mapping(tmp / name, table)
            with open(tmp / "spk2utt", "w", encoding="utf-8") as f:
                for spk, utts in sorted(self.spk2utt.items()):
                    f.write(f"{spk} {' '.join(utts)}\n")
        self.path = Path(path)

    def subset(self, utt_ids: Iterable[str]) -> "DataDir":
        """A new DataDir holding only `utt_ids` (unknown ids are a `UserError`)."""
        keep = set(utt_ids)
        unknown = sorted(keep - set(self.wav_scp))
        if unknown:
            raise UserError(f"utterance '{unknown[0]}' is not in {self.path or 'the data dir'} "
                            f"({len(unknown)} unknown ids)")

        def cut(table: dict[str, str] | None) -> dict[str, str] | None:
            return None if table is None else {u: v for u, v in table.items() if u in keep}

        return DataDir(wav_scp=cut(self.wav_scp), utt2spk=cut(self.utt2spk), text=cut(self.text),
                       utt2lang=cut(self.utt2lang), utt2intent=cut(self.utt2intent))

    @classmethod
    def combine(cls, dirs: Iterable["DataDir"]) -> "DataDir":
        """Concatenate dirs with disjoint utterance ids. An optional file is kept only when
        every input has it."""
        dirs = list(dirs)
        if not dirs:
            raise UserError("nothing to combine: give at least one data dir")
        merged: dict[str, dict[str, str] | None] = {}
        for name in UTT_FILES:
            tables = [d.tables()[name] for d in dirs]
            if any(t is None for t in tables):
                merged[name] = None
                continue
            out: dict[str, str] = {}
            for d, table in zip(dirs, tables):
                for utt, value in table.items():
                    if utt in out:
                        raise UserError(f"utterance '{utt}' of {d.path or 'a data dir'} is also in "
                                        "an earlier dir; utterance ids must be unique when combining")
                    out[utt] = value
            merged[name] = out
        return cls(wav_scp=merged["wav.scp"], utt2spk=merged["utt2spk"], text=merged["text"],
                   utt2lang=merged["utt2lang"], utt2intent=merged["utt2intent"])
