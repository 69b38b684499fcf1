"""The LM corpora: the King James Bible (offline) and the LibriSpeech LM corpus (openslr 11).

* KJV: Debian's `bible-kjv` reader with its `bible-kjv-text` data. `bible -f
  "Gen1:1-Rev22:21"` prints the 31,102 verses of the 1,189 chapters of 66 books, one per line
  as `Ge1:1 In the beginning God created the heaven and the earth.`; `kjv_verses` parses that
  into references and text (0.1 s). About 820k words.
* LibriSpeech LM (https://www.openslr.org/resources/11/librispeech-lm-norm.txt.gz, 1.4 GB
  gzip, about 40M sentences from 14,500 public-domain books, normalised to upper case without
  punctuation, one sentence per line). `librispeech_lm_lines` reads a local copy or downloads
  it (resumably, with `sprune.data.librispeech.fetch_url`) into a cache folder first. All of
  it as a Python list takes several GB of memory: `max_lines` reads the first lines only.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from sprune.errors import UserError
from sprune.lm.text import read_lines

KJV_RANGE = "Gen1:1-Rev22:21"
KJV_VERSES = 31102
KJV_INSTALL = "apt-get install bible-kjv bible-kjv-text"
LIBRISPEECH_LM_URL = "https://www.openslr.org/resources/11/librispeech-lm-norm.txt.gz"
LIBRISPEECH_LM_FILE = "librispeech-lm-norm.txt.gz"

# "1Sm12:3 text": an optional book number, the book abbreviation, chapter:verse, the text.
_VERSE = re.compile(r"^(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*\S)\s*$")


class Verse(NamedTuple):
    """One verse as the `bible` reader abbreviates it: book 'Ge', chapter 1, verse 1."""

    book: str
    chapter: int
    verse: int
    text: str

    @property
    def ref(self) -> str:
        """'Ge1:1'"""
        return f"{self.book}{self.chapter}:{self.verse}"

    @property
    def chapter_ref(self) -> str:
        """'Ge1': the group a verse is held out with (see sprune.lm.text)."""
        return f"{self.book}{self.chapter}"


def kjv_verses(bible_command: str = "bible") -> list[Verse]:
    """Every verse of the King James Bible, in order, from Debian's `bible` reader.

    A missing reader is a `UserError` saying which packages to install; output that does not
    look like `Book1:1 text` is one naming the line.
    """
    exe = shutil.which(bible_command)
    if exe is None:
        raise UserError(f"the KJV corpus needs Debian's bible-kjv ({KJV_INSTALL}); "
                        f"'{bible_command}' is not on PATH")
    try:
        done = subprocess.run([exe, "-f", KJV_RANGE], capture_output=True, check=False)
    except OSError as err:
        raise UserError(f"cannot run {exe} ({err.strerror or err}); reinstall it "
                        f"({KJV_INSTALL})") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UserError(f"{exe} -f {KJV_RANGE} failed (exit {done.returncode}"
                        + (f": {said[-1]}" if said else "") + f"); reinstall {KJV_INSTALL}")
    verses = []
    for lineno, raw in enumerate(done.stdout.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        match = _VERSE.match(raw)
        if match is None:
            raise UserError(f"{exe} output line {lineno} is not 'Book1:1 text' ({raw[:60]!r}); "
                            f"reinstall {KJV_INSTALL}")
        verses.append(Verse(match["book"], int(match["chapter"]), int(match["verse"]),
                            match["text"]))
    if not verses:
        raise UserError(f"{exe} printed no verses (is bible-kjv-text installed?); "
                        f"{KJV_INSTALL}")
    return verses


def kjv_lines(bible_command: str = "bible") -> list[str]:
    """The verse texts of the King James Bible, references stripped (31,102 lines)."""
    return [verse.text for verse in kjv_verses(bible_command)]


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https", "ftp", "file")


def librispeech_lm_file(path_or_url: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The local LibriSpeech LM text: `path_or_url` itself, the corpus file inside a folder,
    or a URL downloaded into `cache_dir` (kept there: a re-run finds it and a broken-off
    download resumes from its `.part` file)."""
    source = str(path_or_url)
    if is_url(source):
        from sprune.data.librispeech import fetch_url

        name = Path(urllib.parse.urlparse(source).path).name or LIBRISPEECH_LM_FILE
        return fetch_url(source, Path(cache_dir) / name)
    path = Path(source)
    if path.is_dir():
        for name in (LIBRISPEECH_LM_FILE, LIBRISPEECH_LM_FILE.removesuffix(".gz")):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path} holds no {LIBRISPEECH_LM_FILE}; download it from "
                        f"{LIBRISPEECH_LM_URL} into that folder, or pass the URL")
    return path


def librispeech_lm_lines(path_or_url: str | os.PathLike, cache_dir: str | os.PathLike,
                         max_lines: int | None = None, progress: bool = False) -> list[str]:
    """The sentences of the LibriSpeech LM corpus (upper case, as distributed; the LM
    normaliser lower-cases them) from a local file (plain or .gz), a folder holding it or a
    URL (see `librispeech_lm_file`); the first `max_lines` only when given."""
    return read_lines(librispeech_lm_file(path_or_url, cache_dir), max_lines=max_lines,
                      progress=progress)
