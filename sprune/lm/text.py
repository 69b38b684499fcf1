"""LM text: reading, normalising, splitting into train / dev / test, and writing the splits.

Normalisation. LM text goes through the same `sprune.data.tokenizer.normalize_text` as ASR
transcripts (Unicode NFC, lower case, punctuation dropped except apostrophes inside words,
whitespace collapsed), so the LM scores exactly the word strings the recogniser emits and
one BPE model serves both. The LibriSpeech LM corpus (upper case, already without
punctuation) and the King James Bible (mixed case, punctuated) end up alike.

Splitting (`split_indices`, `split_lines`). Held-out text is chosen in whole *groups* of
consecutive lines, never line by line: neighbouring verses of one chapter (or sentences of
one book passage) share names, topics and formulae, and a per-line shuffle would put one in
train and the next in test, so test perplexity would measure memorised context. For the
Bible the groups are chapters (1,189 of them, 2 to 176 verses each); for other text they
are blocks of `block_lines` consecutive lines (the LibriSpeech LM corpus lists each book's
sentences in order). Groups are ranked by a hash of (seed, group key), which is the same on
every machine and Python version and does not change when lines are added elsewhere; the
first groups of the ranking go to test until it holds its share of lines, the next ones to
dev, the rest to train. A chapter drawn this way can come from any book, so held-out text
covers the whole corpus. Each split keeps the corpus order.

Duplicates. Train keeps its repeated lines: how often "and the lord spake unto moses saying"
occurs is information the LM should learn. But the splits are made disjoint as sets of
sentences: a sentence that is held out (dev or test) is removed from train wherever else it
occurs, and a test sentence is removed from dev, so no held-out sentence has been seen
verbatim in training (the counts are recorded in stats.json). Held-out splits keep their own
repeats, as a real test set would.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any, Hashable, Sequence

from sprune.data.tokenizer import normalize_text
from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text

SPLITS = ("train", "dev", "test")
STATS_FILE = "stats.json"
_GZIP_MAGIC = b"\x1f\x8b"


def read_lines(path: str | os.PathLike, max_lines: int | None = None,
               progress: bool = False) -> list[str]:
    """The lines of a UTF-8 text file (gzip-compressed or not), without their line ends.

    Empty lines are kept, so index i is line i + 1 of the file. A byte that is not UTF-8 is
    a `UserError` naming file:line and column; a file without any non-empty line, a missing
    file and a broken gzip stream are `UserError`s too. `max_lines` stops after that many
    lines; `progress` shows a tqdm bar once reading takes more than 2 s.
    """
    from tqdm import tqdm

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give an existing text file (one sentence "
                        "per line, plain or .gz)")
    try:
        with open(path, "rb") as probe:
            gz = probe.read(2) == _GZIP_MAGIC
        lines: list[str] = []
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            bar = tqdm(f, desc=f"reading {path.name}", unit=" lines", disable=not progress,
                       mininterval=1.0, delay=2.0)
            for lineno, raw in enumerate(bar, 1):
                if max_lines is not None and lineno > max_lines:
                    bar.close()
                    break
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    column = len(raw[:err.start].decode("utf-8")) + 1
                    raise UserError(f"{path}:{lineno}: not UTF-8 text (byte "
                                    f"0x{raw[err.start]:02x} at column {column}); convert it "
                                    "(iconv -t UTF-8)") from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                lines.append(line.rstrip("\r\n"))
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"{path}: broken gzip file ({err or 'truncated'}); download or "
                        "compress it again") from None
    except OSError as err:
        raise UserError(f"{path}: unreadable ({err.strerror or err})") from None
    if not any(line.strip() for line in lines):
        raise UserError(f"{path}: no text; the file needs at least one non-empty line "
                        "(one sentence per line)")
    return lines


def normalize_lm_line(line: str) -> str:
    """One line of LM text as the LM sees it: `sprune.data.tokenizer.normalize_text`, the
    normalisation of ASR transcripts (see the module docstring)."""
    return normalize_text(line)


def _count(value: float, n: int, name: str) -> int:
    """--dev / --test: a fraction of the lines when below 1, else a number of lines."""
    if value < 0 or (value >= 1 and value != int(value)):
        raise UserError(f"{name} {value} must be a fraction in [0, 1) or a whole number of "
                        "lines")
    if value == 0:
        return 0
    return max(1, round(value * n)) if value < 1 else int(value)


def _rank(seed: int, key: Hashable) -> bytes:
    return hashlib.sha256(f"{seed}\t{key}".encode("utf-8")).digest()


def split_indices(lines: Sequence[str], dev: float, test: float, seed: int = 0,
                  groups: Sequence[Hashable] | None = None,
                  block_lines: int = 100) -> dict[str, list[int]]:
    """Split line indices into {"train", "dev", "test"}, each in corpus order.

    `dev` / `test`: a fraction of the lines (0.02) or, when >= 1, a number of lines; whole
    groups are taken, so a split ends up with at most one group more than asked for.
    `groups[i]`: the group of line i (e.g. the chapter "Ge1"); without it, consecutive lines
    form blocks of `block_lines`, made smaller for small files so that there are at least
    100 blocks (a 10-line file is split by line). `lines` should be normalised already: the
    splits are made disjoint as sets of sentences (see the module docstring).
    """
    n = len(lines)
    want_test, want_dev = _count(test, n, "test"), _count(dev, n, "dev")
    if want_test + want_dev >= n:
        raise UserError(f"dev ({want_dev}) and test ({want_test}) lines leave no training text "
                        f"out of {n} lines; lower --dev / --test")
    if groups is None:
        block = max(1, min(block_lines, n // 100))
        groups = [i // block for i in range(n)]
    elif len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} lines")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    order = sorted(members, key=lambda key: _rank(seed, key))
    assign: dict[str, list[int]] = {"test": [], "dev": []}
    for key in order:
        for name, want in (("test", want_test), ("dev", want_dev)):
            if len(assign[name]) < want:
                assign[name].extend(members[key])
                break
        else:
            break
    held = set(assign["test"]) | set(assign["dev"])
    test_text = {lines[i] for i in assign["test"]}
    held_text = test_text | {lines[i] for i in assign["dev"]}
    train = [i for i in range(n) if i not in held and lines[i] not in held_text]
    if not train:
        raise UserError(f"the {len(members)} groups of {n} lines leave no training text once "
                        "dev and test are taken; lower --dev / --test or give more text")
    return {"train": train, "dev": sorted(i for i in assign["dev"] if lines[i] not in test_text),
            "test": sorted(assign["test"])}


def split_lines(lines: Sequence[str], dev: float, test: float, seed: int = 0,
                groups: Sequence[Hashable] | None = None,
                block_lines: int = 100) -> dict[str, list[str]]:
    """{"train", "dev", "test"} -> their lines; see `split_indices` for the rules."""
    parts = split_indices(lines, dev, test, seed, groups, block_lines)
    return {name: [lines[i] for i in parts[name]] for name in SPLITS}


def text_stats(lines: Sequence[str]) -> dict[str, int]:
    """lines, words (space-separated) and characters (spaces included, line ends not)."""
    return {"lines": len(lines), "words": sum(len(line.split()) for line in lines),
            "characters": sum(len(line) for line in lines)}


def write_splits(out_dir: str | os.PathLike, splits: dict[str, Sequence[str]],
                 source: str = "", ids: dict[str, Sequence[str]] | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `out_dir/{train,dev,test}.txt` (one sentence per line) and stats.json.

    `ids[split]` (optional, aligned with the lines) goes to `<split>.ids`: where each line
    came from (a verse reference, a source line number). stats.json holds, per split, the
    `text_stats`, plus `source` and whatever `extra` adds (the options that made it). Every
    file is written atomically; stats.json is removed first and written last, so it exists
    only beside a complete set of splits.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / STATS_FILE).unlink(missing_ok=True)
    for name in SPLITS:
        _write_lines(out / f"{name}.txt", splits[name])
        if ids is not None:
            if len(ids[name]) != len(splits[name]):
                raise ValueError(f"{len(ids[name])} ids for {len(splits[name])} {name} lines")
            _write_lines(out / f"{name}.ids", ids[name])
    stats = {"source": source, **{name: text_stats(splits[name]) for name in SPLITS},
             **(extra or {})}
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    return stats


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
