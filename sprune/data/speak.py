"""Speak a plain text file with espeak-ng into a Kaldi data dir (one split of a spoken corpus).

A text file (one sentence per line, e.g. `sprune lm text`'s data/kjv/test.txt) and optional
ids (its `.ids` file, one id per line, same order; default: the line numbers) become

    WAV_DIR/<out name>/<utt id>.wav     utt id = <speaker id>-<line id>, 16 kHz mono 16-bit
    OUT/                                Kaldi data dir: wav.scp (absolute paths), text (the
                                        line, whitespace collapsed), utt2spk, spk2utt, utt2lang

Lines are taken in file order: empty lines are skipped, lines longer than `max_words` words
are skipped, and the first `max_lines` of the rest are spoken, each by `speakers_per_line`
speakers (the least-loaded ones, ties broken by the seed: round-robin in a seeded order).

Speaker-disjoint splits. espeak-ng's 32 human-sounding voice variants (`synth.VARIANTS`) are
partitioned once and for all into three pools (`SPEAKER_POOLS`): 20 for train, 6 for dev,
6 for test. The speakers of a split (`split`) are drawn from its pool only (variant order,
rate and pitch from the seed), and their ids name the split (`en-US-test-s03`). So train,
dev and test dirs never share a speaker, nor even a voice variant, whatever seeds and
speaker counts each run uses. Asking for more speakers than the pool has variants reuses
variants with other rates and pitches, still within the split.

Rendering, audio variation, the worker pool, atomic wav writes and resuming are those of the
intent corpus (`sprune.data.synth`): the same seed gives byte-identical wavs, existing wavs
are kept (a killed run resumes, a larger `max_lines` only speaks the new lines), and
`WAV_DIR/<out name>/speak.json` pins what the wavs depend on (seed, split, voice, backend,
the text and ids files), so a run with other inputs is refused instead of mixing them.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sprune.data.datadir import DataDir
from sprune.data.espeak import Voice, backend_name, synthesize
from sprune.data.phrases import load_phrases, resolve_language
from sprune.data.synth import (VARIANTS, VARIATION_VERSION, Speaker, Utterance, _stable_hash,
                               check_or_pin, draw_voices, pick_least_loaded, speak_all)
from sprune.errors import UserError

SPLITS = ("train", "dev", "test")

# A fixed partition of synth.VARIANTS (both sexes and a Klatt voice in each): the speakers of
# a split use only its own variants, so no voice of dev or test is ever heard in train.
SPEAKER_POOLS: dict[str, tuple[str, ...]] = {
    "train": ("m1", "m2", "m5", "m8", "f1", "f2", "f5", "klatt", "klatt4", "Andy", "Andrea",
              "belinda", "benjamin", "edward", "linda", "steph", "max", "rob", "michel",
              "quincy"),
    "dev": ("m4", "m7", "f4", "klatt3", "Alicia", "paul"),
    "test": ("m3", "m6", "f3", "klatt2", "Annie", "david"),
}
# Bump when the pools or the way speakers are drawn change: it is part of what speak.json pins.
POOL_VERSION = 1
MANIFEST = "speak.json"


@dataclass(frozen=True)
class Line:
    """One line of the text file: its 1-based number, its id and its text."""

    number: int
    line_id: str
    text: str


@dataclass
class SpeakReport:
    """What `speak_text` did."""

    lines: int = 0          # lines in the text file
    empty: int = 0          # skipped: no words
    too_long: int = 0       # skipped: more than max_words words
    spoken_lines: int = 0   # lines selected (each said by speakers_per_line speakers)
    speakers: int = 0
    utterances: int = 0
    written: int = 0
    reused: int = 0
    seconds: float = 0.0
    backend: str = ""
    wav_dir: Path | None = None


def default_speakers(split: str) -> int:
    """One speaker per voice variant of the split's pool (train 20, dev 6, test 6)."""
    return len(SPEAKER_POOLS[_check_split(split)])


def _check_split(split: str) -> str:
    if split not in SPEAKER_POOLS:
        raise UserError(f"unknown split '{split}'; use one of {', '.join(SPLITS)} (each has "
                        "its own speaker pool)")
    return split


def resolve_voice(lang: str, voice: str | None) -> tuple[str, str]:
    """(language tag for utt2lang, espeak-ng voice). A known language (en, fr-FR, ...) gets
    its tag and, unless `voice` is given, the voice of its phrase table; another tag needs
    `voice`."""
    if not lang.strip() or len(lang.split()) != 1:
        raise UserError(f"language tag '{lang}' must be one token, e.g. en-US")
    try:
        tag = resolve_language(lang)
    except UserError:
        if voice is None:
            raise UserError(f"no espeak-ng voice is known for language '{lang}'; name one "
                            "with --voice (see `espeak-ng --voices`)") from None
        return lang.strip(), voice
    return tag, voice or load_phrases(tag).voice


def read_text(text_path: str | Path, ids_path: str | Path | None = None) -> list[Line]:
    """Every line of the text file (UTF-8, plain or .gz) with its id, empty ones included
    (text ""). Ids come from `ids_path` (one per line, same order) or are the line numbers.

    A missing or non-UTF-8 file, an ids file whose line count differs, and an id that is not
    one token usable in a file name, or not unique, are `UserError`s naming file and line.
    """
    from sprune.lm.text import read_lines

    texts = read_lines(text_path)
    if ids_path is None:
        ids = [str(i) for i in range(1, len(texts) + 1)]
    else:
        ids = read_lines(ids_path)
        if len(ids) != len(texts):
            raise UserError(f"{ids_path} has {len(ids)} lines but {text_path} has {len(texts)}; "
                            "give the ids file written with the text (one id per line, same "
                            "order)")
    lines, seen = [], {}
    for number, (line_id, raw) in enumerate(zip(ids, texts), start=1):
        text = " ".join(raw.split())
        line_id = line_id.strip()
        if text and ids_path is not None:
            if not line_id or len(line_id.split()) != 1 or "/" in line_id or line_id[0] == ".":
                raise UserError(f"{ids_path}:{number}: id '{line_id}' must be one token without "
                                "'/' (and not start with '.'): it names the utterance and its wav")
            if line_id in seen:
                raise UserError(f"{ids_path}:{number}: duplicate id '{line_id}' (first at line "
                                f"{seen[line_id]}); ids must be unique")
            seen[line_id] = number
        lines.append(Line(number, line_id, text))
    return lines


def select_lines(lines: Sequence[Line], max_lines: int | None = None,
                 max_words: int | None = None) -> tuple[list[Line], int, int]:
    """(the first `max_lines` non-empty lines of at most `max_words` words, number of empty
    lines skipped, number of longer lines skipped) — counted over the lines looked at."""
    chosen, empty, too_long = [], 0, 0
    for line in lines:
        if max_lines is not None and len(chosen) >= max_lines:
            break
        if not line.text:
            empty += 1
        elif max_words is not None and len(line.text.split()) > max_words:
            too_long += 1
        else:
            chosen.append(line)
    return chosen, empty, too_long


def plan_speakers(lang: str, voice: str, split: str, n_speakers: int,
                  seed: int) -> list[Speaker]:
    """The `n_speakers` speakers of `split`, drawn from (seed, lang, split) out of the
    split's voice pool; ids '<lang>-<split>-s01'. Speaker i does not depend on n."""
    pool = SPEAKER_POOLS[_check_split(split)]
    rng = np.random.default_rng([seed, _stable_hash(f"speak\t{lang}\t{split}")])
    width = max(2, len(str(n_speakers)))
    return [Speaker(spk_id=f"{lang}-{split}-s{i + 1:0{width}d}", lang=lang, split=split,
                    voice=v) for i, v in enumerate(draw_voices(rng, voice, pool, n_speakers))]


def plan_utterances(lines: Sequence[Line], speakers: Sequence[Speaker], speakers_per_line: int,
                    seed: int, wav_dir: Path) -> list[Utterance]:
    """Give each line to the `speakers_per_line` least-loaded speakers (seeded ties). Line k's
    speakers depend only on the lines before it, so adding lines keeps earlier choices."""
    rng = np.random.default_rng([seed, _stable_hash(f"speak\t{speakers[0].split}"), 1])
    load = np.zeros(len(speakers))
    utterances = []
    for line in lines:
        for k in pick_least_loaded(load, speakers_per_line, rng):
            spk = speakers[k]
            utt_id = f"{spk.spk_id}-{line.line_id}"
            utterances.append(Utterance(utt_id, spk, line.text, wav_dir / f"{utt_id}.wav", seed))
    return utterances


def _sha256(path: str | Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def speak_text(text: str | Path, out: str | Path, split: str, ids: str | Path | None = None,
               wav_dir: str | Path | None = None, lang: str = "en-US", voice: str | None = None,
               n_speakers: int | None = None, speakers_per_line: int = 1,
               max_lines: int | None = None, max_words: int | None = None, seed: int = 0,
               jobs: int = 2, progress: bool = True) -> SpeakReport:
    """Speak the lines of `text` into the Kaldi data dir `out` (see the module docstring).

    split: train, dev or test: whose speaker pool to draw from. wav_dir: the wavs go to
    `wav_dir/<out name>/` (default: `wav/` beside `out`). n_speakers: default one per variant
    of the split's pool (fewer when there are fewer utterances). Everything is checked before
    anything is written.
    """
    start = time.time()
    _check_split(split)
    for name, value in (("jobs", jobs), ("speakers", n_speakers),
                        ("speakers per line", speakers_per_line), ("max lines", max_lines),
                        ("max words", max_words)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1 (got {value})")
    if speakers_per_line > (n_speakers or default_speakers(split)):
        raise UserError(f"each line should be said by {speakers_per_line} speakers but there "
                        f"are only {n_speakers or default_speakers(split)}; lower "
                        "--speakers-per-line or raise --speakers")
    lang, voice = resolve_voice(lang, voice)
    out = Path(out).resolve()
    wav_root = Path(wav_dir).resolve() if wav_dir is not None else out.parent / "wav"
    wavs = wav_root / out.name
    if _inside(wavs, out) or _inside(out, wavs):
        raise UserError(f"the wavs ({wavs}) and the data dir ({out}) must not be inside one "
                        "another (the data dir is replaced as a whole); use another --wav-dir")

    all_lines = read_text(text, ids)
    chosen, empty, too_long = select_lines(all_lines, max_lines, max_words)
    if not chosen:
        shortest = min(len(line.text.split()) for line in all_lines if line.text)
        raise UserError(f"{text}: no line is left to speak: all {too_long} non-empty lines have "
                        f"more than {max_words} words (the shortest has {shortest}); raise "
                        "--max-words")
    if n_speakers is None:  # one per variant of the pool, but none without a line to say
        n_speakers = min(default_speakers(split), len(chosen) * speakers_per_line)
    elif n_speakers > len(chosen) * speakers_per_line:
        raise UserError(f"{n_speakers} speakers do not fit {len(chosen)} lines x "
                        f"{speakers_per_line} speaker(s) per line: some would say nothing; "
                        "lower --speakers or speak more lines")
    speakers = plan_speakers(lang, voice, split, n_speakers, seed)
    utterances = plan_utterances(chosen, speakers, speakers_per_line, seed, wavs)
    todo = [u for u in utterances if not u.wav_path.exists()]
    report = SpeakReport(lines=len(all_lines), empty=empty, too_long=too_long,
                         spoken_lines=len(chosen), speakers=n_speakers,
                         utterances=len(utterances), reused=len(utterances) - len(todo),
                         backend=backend_name(), wav_dir=wavs)
    if todo:  # a bad --voice fails here, before anything is written
        synthesize("a", Voice(voice, speakers[0].voice.variant))
    pinned = {"seed": seed, "split": split, "lang": lang, "voice": voice,
              "backend": report.backend, "variation_version": VARIATION_VERSION,
              "pool_version": POOL_VERSION, "text_sha256": _sha256(text),
              "ids_sha256": _sha256(ids)}
    check_or_pin(wavs / MANIFEST, pinned, "use another --wav-dir or --out", verb="spoken")

    report.written = speak_all(todo, jobs, progress, desc=f"speak {split}")
    DataDir(wav_scp={u.utt_id: str(u.wav_path) for u in utterances},
            utt2spk={u.utt_id: u.speaker.spk_id for u in utterances},
            text={u.utt_id: u.text for u in utterances},
            utt2lang={u.utt_id: lang for u in utterances}).save(out)
    report.seconds = time.time() - start
    return report
