"""The offline spoken-intent corpus: MINDS-14-like bank calls spoken by espeak-ng.

For each language, `n_speakers` synthetic speakers are drawn from the seed: an espeak-ng voice
variant (m1..m8, f1..f5, klatt..., named voices), a rate (in `rate_range`, by default
130-190 words/min) and a pitch (30-70). Speakers are split into train / dev / test, so test
speakers are never heard in training. Every (intent, phrasing) of the phrase table
(`sprune.data.phrases`) is spoken by `speakers_per_phrasing[i]` different speakers of split i.

Each utterance is resampled to 16 kHz mono and varied a little (leading and trailing
silence, gain, and usually low-level white noise) from a random stream seeded by
(seed, utterance id), then written as 16-bit WAV to

    OUT/wav/<lang>/<utt id>.wav          utt id = <speaker id>-<intent>-<phrasing index>
    OUT/<split>_<lang>/                  Kaldi data dir: wav.scp (absolute paths), text,
                                         utt2spk, spk2utt, utt2lang, utt2intent

The same seed gives byte-identical wavs (for one espeak-ng backend and version). Each wav is
written atomically and existing ones are kept, so a killed run resumes where it stopped;
`OUT/wav/<lang>/synth.json` records the speakers, seed, rate range and silence trimming so
that a resumed run with other settings is refused instead of mixing two corpora (a synth.json
written before the last two were recorded means their defaults).

Shorter utterances (training time grows with the audio): a faster `rate_range`, and
`trim_silence` = S, which cuts the silence that espeak-ng leaves before and after the speech
down to S seconds at each end and then adds none (the 50-400 ms of `vary` are left out), so
every wav holds at most S seconds before and after the speech.

The speaking machinery here (`draw_voices`, `pick_least_loaded`, `render_to_file`,
`speak_all`, `check_or_pin`) also speaks plain text files (`sprune.data.speak`).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile

from sprune.data.audio import SAMPLE_RATE, resample
from sprune.data.datadir import DataDir
from sprune.data.espeak import Voice, backend_name, synthesize
from sprune.data.phrases import INTENTS, load_phrases, resolve_language
from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text

SPLITS = ("train", "dev", "test")

# espeak-ng variants that sound like people (no robots, whispers or croaks); all of them ship
# with both the Debian package and espeakng-loader. Speakers beyond this list reuse variants
# with another rate and pitch.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "Andrea", "Alicia", "belinda",
    "benjamin", "david", "edward", "linda", "steph", "max", "paul", "rob", "michel", "quincy",
)
RATE_RANGE = (130, 190)   # words per minute, inclusive; the default of `rate_range`
RATE_LIMITS = (80, 450)   # what espeak-ng accepts (`sprune.data.espeak.Voice`)
PITCH_RANGE = (30, 70)    # espeak-ng pitch, 0-99, inclusive

_PR_SET_PDEATHSIG = 1  # prctl option: signal this process when its parent dies

# Bump when the variation below changes: it is part of what synth.json pins.
VARIATION_VERSION = 1

# `cut_silence`: samples quieter than this fraction of the utterance's peak (-40 dB) are
# silence. Around the speech, espeak-ng 1.51 writes digital silence (a few ms before; after,
# about 0.45 s at 130 words/min, 0.25 s at 190, 0.07 s at 300) or, for the breathy variants
# (f2, f5), breath fading out below -40 dB for up to 0.3 s; over 1,008 sentences of all
# languages the first sample at 1 % of the peak came at most 5 ms after the first non-zero
# one.
SILENCE_THRESHOLD = 0.01

# What synth.json means when it lacks a key: corpora pinned before the key existed.
PIN_DEFAULTS = {"rate_range": list(RATE_RANGE), "trim_silence": None}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an id like 'en-US-s03', its split and how espeak-ng speaks."""

    spk_id: str
    lang: str
    split: str
    voice: Voice


@dataclass(frozen=True)
class Utterance:
    """One sentence to speak and where its wav goes (`render_to_file` speaks it).

    `seed` and `utt_id` seed the audio variation; `intent` is the label of an intent
    corpus utterance (None for plain text, `sprune.data.speak`); `trim_silence`: seconds of
    silence kept at each end (`cut_silence`), None to keep espeak-ng's and add more.
    """

    utt_id: str
    speaker: Speaker
    text: str
    wav_path: Path
    seed: int
    intent: str | None = None
    trim_silence: float | None = None


@dataclass
class SynthReport:
    """What `synthesize_corpus` did: data dir name -> utterances, wavs written and reused."""

    dirs: dict[str, int] = field(default_factory=dict)
    written: int = 0
    reused: int = 0
    seconds: float = 0.0
    backend: str = ""


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; the streams must not be.
    return zlib.crc32(text.encode("utf-8"))


def split_sizes(n_speakers: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Speakers per split: dev and test get round(n * fraction) but at least one each."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise UserError(f"speaker split {tuple(fractions)} needs three positive fractions "
                        "for train, dev and test, e.g. 0.6,0.2,0.2")
    total = sum(fractions)
    dev = max(1, round(n_speakers * fractions[1] / total))
    test = max(1, round(n_speakers * fractions[2] / total))
    train = n_speakers - dev - test
    if train < 1:
        raise UserError(f"{n_speakers} speakers per language cannot be split into train, dev "
                        "and test; use at least 3 speakers")
    return train, dev, test


def check_rate_range(rate_range: Sequence[int]) -> tuple[int, int]:
    """`rate_range` as (LO, HI), or a `UserError` unless RATE_LIMITS[0] <= LO <= HI <=
    RATE_LIMITS[1] words/min."""
    low, high = RATE_LIMITS
    if (len(rate_range) != 2 or any(int(r) != r for r in rate_range)
            or not low <= rate_range[0] <= rate_range[1] <= high):
        given = ",".join(str(r) for r in rate_range)
        raise UserError(f"--rate-range '{given}' needs two speaking rates LO,HI with "
                        f"{low} <= LO <= HI <= {high} words/min (espeak-ng's range), e.g. "
                        f"{RATE_RANGE[0]},{RATE_RANGE[1]}")
    return int(rate_range[0]), int(rate_range[1])


def check_trim_silence(seconds: float | None) -> None:
    """A `UserError` unless `seconds` is None (no trimming) or a finite number >= 0."""
    if seconds is not None and not 0 <= seconds < float("inf"):
        raise UserError(f"--trim-silence {seconds} must be the seconds of silence to keep at "
                        "each end, 0 or more, e.g. 0.1")


def plan_speakers(lang: str, n_speakers: int, fractions: Sequence[float], seed: int,
                  rate_range: Sequence[int] = RATE_RANGE) -> list[Speaker]:
    """Draw the speakers of one language from (seed, lang), rates in the inclusive
    `rate_range`; the first ones are train."""
    lang = resolve_language(lang)
    rng = np.random.default_rng([seed, _stable_hash(lang)])
    splits = [split for split, size in zip(SPLITS, split_sizes(n_speakers, fractions))
              for _ in range(size)]
    voices = draw_voices(rng, load_phrases(lang).voice, VARIANTS, len(splits), rate_range)
    return [Speaker(spk_id=f"{lang}-s{i + 1:02d}", lang=lang, split=split, voice=voice)
            for i, (split, voice) in enumerate(zip(splits, voices))]


def draw_voices(rng: np.random.Generator, voice: str, variants: Sequence[str], n: int,
                rate_range: Sequence[int] = RATE_RANGE) -> list[Voice]:
    """`n` speakers of espeak-ng `voice`: the variants in an order drawn from `rng` (cycled
    when n is larger), each with a rate drawn in the inclusive `rate_range` (words/min) and a
    pitch in PITCH_RANGE.

    Speaker i does not depend on n: asking for more speakers only adds new ones.
    """
    low, high = check_rate_range(rate_range)
    order = [variants[i] for i in rng.permutation(len(variants))]
    voices = []
    for i in range(n):
        rate = int(rng.integers(low, high + 1))
        pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        voices.append(Voice(voice, order[i % len(order)], rate, pitch))
    return voices


def pick_least_loaded(load: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """The `k` least-loaded speakers (indices into `load`, ties broken by `rng`), in index
    order; their load goes up by one. Sentence after sentence this spreads the work evenly,
    round-robin in a seeded order."""
    chosen = np.lexsort((rng.random(len(load)), load))[:k]
    load[chosen] += 1
    return sorted(int(i) for i in chosen)


def plan_utterances(out_dir: Path, speakers: list[Speaker], intents: Sequence[str],
                    phrasings_per_intent: int | None, speakers_per_phrasing: Sequence[int],
                    seed: int, trim_silence: float | None = None) -> list[Utterance]:
    """Give each (intent, phrasing) to `speakers_per_phrasing[i]` speakers of split i.

    Within a split, each sentence goes to the least-loaded speakers (ties broken by the
    seed), so speakers say about the same number of sentences.
    """
    lang = speakers[0].lang
    table = load_phrases(lang)
    rng = np.random.default_rng([seed, _stable_hash(lang), 1])
    utterances = []
    for split, per_phrasing in zip(SPLITS, speakers_per_phrasing):
        pool = [s for s in speakers if s.split == split]
        if per_phrasing > len(pool):
            raise UserError(f"each phrasing should be said by {per_phrasing} {split} speakers "
                            f"but {lang} has only {len(pool)}; lower the per-phrasing count or "
                            "raise the number of speakers")
        load = np.zeros(len(pool))
        for intent in intents:
            sentences = table.phrasings[intent]
            for index, text in enumerate(sentences[:phrasings_per_intent]):
                for k in pick_least_loaded(load, per_phrasing, rng):
                    spk = pool[k]
                    utt_id = f"{spk.spk_id}-{intent}-{index + 1:02d}"
                    utterances.append(Utterance(utt_id, spk, text,
                                                out_dir / "wav" / lang / f"{utt_id}.wav", seed,
                                                intent=intent, trim_silence=trim_silence))
    return utterances


def cut_silence(wav: np.ndarray, margin_s: float, threshold: float = SILENCE_THRESHOLD,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading and trailing silence down to `margin_s` seconds at each end. wav: [T] ->
    [T'], a view (T' <= T).

    Silence: samples whose absolute value is below `threshold` times the peak. Everything
    from the first to the last louder sample is kept, so speech is never cut; an end with
    less silence than the margin keeps all of it; a wav with no sound is returned as it is.
    """
    if not wav.size:
        return wav
    peak = float(np.abs(wav).max())
    if peak == 0:
        return wav
    loud = np.flatnonzero(np.abs(wav) >= threshold * peak)
    margin = round(margin_s * sample_rate)
    return wav[max(0, loud[0] - margin):loud[-1] + 1 + margin]


def vary(wav: np.ndarray, rng: np.random.Generator, pad: bool = True) -> np.ndarray:
    """Make clean synthetic speech a little less clean. wav: [T] -> [T'] float32, 16 kHz.

    Peak level -12..-1 dBFS, 50-400 ms of silence before and after (none when `pad` is
    False: T' = T), and (3 times in 4) white noise 20-40 dB below the speech power over the
    whole utterance. The same draws are made either way.
    """
    peak_db, lead_s, trail_s, noisy, snr_db = (rng.uniform(-12, -1), rng.uniform(0.05, 0.4),
                                               rng.uniform(0.05, 0.4), rng.random() < 0.75,
                                               rng.uniform(20, 40))
    wav = wav * (10 ** (peak_db / 20) / max(float(np.abs(wav).max()), 1e-6))
    speech_power = float(np.mean(wav ** 2))
    if pad:
        wav = np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE)), wav,
                              np.zeros(int(trail_s * SAMPLE_RATE))])
    noise = rng.standard_normal(len(wav))
    if noisy:
        wav = wav + noise * np.sqrt(speech_power / 10 ** (snr_db / 10))
    return wav.astype(np.float32)


def render(utt: Utterance) -> np.ndarray:
    """Speak one utterance: espeak-ng, resampled to 16 kHz, its silence trimmed (when
    `utt.trim_silence` is set; then no silence is added), varied. Returns float32 [T]."""
    wav, rate = synthesize(utt.text, utt.speaker.voice)
    wav = resample(wav, rate, SAMPLE_RATE)
    if utt.trim_silence is not None:
        wav = cut_silence(wav, utt.trim_silence)
    return vary(wav, np.random.default_rng([utt.seed, _stable_hash(utt.utt_id)]),
                pad=utt.trim_silence is None)


def render_to_file(utt: Utterance) -> bool:
    """Write the utterance's wav unless it exists. Returns True when it was written."""
    if utt.wav_path.exists():
        return False
    wav = render(utt)
    with atomic_path(utt.wav_path) as tmp:
        soundfile.write(str(tmp), np.clip(wav, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16",
                        format="WAV")
    return True


def _init_worker(parent_pid: int) -> None:
    import torch

    # The pool is the parallelism: intra-op threads only fight it (a 1 s clip resamples in
    # about 10 ms on one thread and 30 times slower on two busy ones).
    torch.set_num_threads(1)
    # A killed parent would otherwise leave its workers waiting forever (Linux only).
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_or_pin(wav_dir: Path, speakers: list[Speaker], seed: int, backend: str,
                  rate_range: Sequence[int], trim_silence: float | None) -> None:
    """Refuse to resume into a wav dir made with other speakers, seed, backend, rate range or
    silence trimming."""
    pinned = {
        "seed": seed, "backend": backend, "variation_version": VARIATION_VERSION,
        "speakers": {s.spk_id: {"split": s.split, "voice": s.voice.spec, "rate": s.voice.rate,
                                "pitch": s.voice.pitch} for s in speakers},
        "rate_range": list(rate_range),
        "trim_silence": None if trim_silence is None else float(trim_silence),
    }
    check_or_pin(wav_dir / "synth.json", pinned, "use another output dir",
                 defaults=PIN_DEFAULTS)


def check_or_pin(manifest: Path, pinned: dict, fix: str, verb: str = "synthesized",
                 defaults: dict | None = None) -> None:
    """Write `pinned` (what the wavs beside `manifest` depend on) to the JSON `manifest`, or,
    when it exists, refuse with a `UserError` unless it holds the same: a resumed run never
    mixes wavs of two settings. `fix`: what to do instead, e.g. "use another output dir".
    `defaults`: the values of keys that a manifest written before they were pinned lacks."""
    wav_dir = manifest.parent
    if manifest.exists():
        found = {**(defaults or {}), **json.loads(manifest.read_text(encoding="utf-8"))}
        if found != pinned:
            differs = sorted(k for k in set(pinned) | set(found)
                             if found.get(k) != pinned.get(k))
            raise UserError(f"{wav_dir} was {verb} with other settings "
                            f"({', '.join(differs)} differ); {fix} or delete {wav_dir}")
        return
    atomic_write_text(manifest, json.dumps(pinned, indent=1, sort_keys=True) + "\n")


def speak_all(todo: Sequence[Utterance], jobs: int, progress: bool, desc: str = "synth") -> int:
    """Write the wav of every utterance in `todo` (`render_to_file`) with `jobs` worker
    processes and a tqdm bar (unless `progress` is False). Returns how many were written."""
    from tqdm import tqdm

    written = 0
    bar = tqdm(total=len(todo), desc=desc, unit="utt", disable=not progress or not todo)
    if not todo:
        pass  # everything was spoken by an earlier run: no need to load torch
    elif jobs == 1 or len(todo) < 2:
        with _one_torch_thread():
            for utt in todo:
                written += render_to_file(utt)
                bar.update()
    else:
        # fork, as torch's DataLoader does (workers then use one thread): spawn would import
        # torch again in every worker and re-run an unguarded __main__.
        context = multiprocessing.get_context("fork")
        import torch  # noqa: F401  (imported once here, inherited by every worker)

        with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context,
                                 initializer=_init_worker, initargs=(os.getpid(),)) as pool:
            # Small chunks: about 0.3 s of work each, so the bar moves and Ctrl-C is quick.
            for was_written in pool.map(render_to_file, todo, chunksize=4):
                written += was_written
                bar.update()
    bar.close()
    return written


def synthesize_corpus(out_dir: str | Path, langs: Sequence[str], seed: int = 0,
                      phrasings_per_intent: int | None = None, n_speakers: int = 10,
                      splits: Sequence[float] = (0.6, 0.2, 0.2),
                      speakers_per_phrasing: Sequence[int] = (2, 1, 1),
                      intents: Sequence[str] | None = None, jobs: int = 2,
                      progress: bool = True, rate_range: Sequence[int] = RATE_RANGE,
                      trim_silence: float | None = None) -> SynthReport:
    """Speak the corpus into `out_dir` and write one data dir per language and split.

    langs: tags or short names ('fr'). phrasings_per_intent: the first N sentences of each
    intent (None: all). n_speakers: per language, split by the `splits` fractions.
    speakers_per_phrasing: how many train / dev / test speakers say each sentence.
    intents: a subset of the 14 (None: all). jobs: worker processes. rate_range: the
    speakers' rates, (LO, HI) words/min inclusive. trim_silence: seconds of silence kept at
    each end of every utterance (None: espeak-ng's, plus 50-400 ms; see `cut_silence`).
    """
    start = time.time()
    if jobs < 1:
        raise UserError(f"jobs must be at least 1 (got {jobs})")
    if phrasings_per_intent is not None and phrasings_per_intent < 1:
        raise UserError(f"phrasings per intent must be at least 1 (got {phrasings_per_intent})")
    if len(speakers_per_phrasing) != 3 or min(speakers_per_phrasing) < 1:
        raise UserError(f"speakers per phrasing {tuple(speakers_per_phrasing)} needs three "
                        "counts >= 1 for train, dev and test, e.g. 2,1,1")
    intents = list(intents or INTENTS)
    unknown = sorted(set(intents) - set(INTENTS))
    if unknown:
        raise UserError(f"unknown intent '{unknown[0]}'; known: {', '.join(INTENTS)}")
    langs = list(dict.fromkeys(resolve_language(lang) for lang in langs))
    if not langs:
        raise UserError("no language given; name at least one, e.g. en-US")
    rate_range = check_rate_range(rate_range)
    check_trim_silence(trim_silence)
    out_dir = Path(out_dir).resolve()
    report = SynthReport(backend=backend_name())

    by_lang: dict[str, list[Utterance]] = {}
    speakers = {lang: plan_speakers(lang, n_speakers, splits, seed, rate_range)
                for lang in langs}
    for lang in langs:
        by_lang[lang] = plan_utterances(out_dir, speakers[lang], intents, phrasings_per_intent,
                                        speakers_per_phrasing, seed, trim_silence)
    for lang in langs:  # only once the whole plan is valid
        _check_or_pin(out_dir / "wav" / lang, speakers[lang], seed, report.backend,
                      rate_range, trim_silence)
    utterances = [u for lang in langs for u in by_lang[lang]]
    todo = [u for u in utterances if not u.wav_path.exists()]
    report.reused = len(utterances) - len(todo)

    report.written = speak_all(todo, jobs, progress, desc="synth")

    for lang in langs:
        for split in SPLITS:
            utts = [u for u in by_lang[lang] if u.speaker.split == split]
            name = f"{split}_{lang}"
            DataDir(wav_scp={u.utt_id: str(u.wav_path) for u in utts},
                    utt2spk={u.utt_id: u.speaker.spk_id for u in utts},
                    text={u.utt_id: u.text for u in utts},
                    utt2lang={u.utt_id: lang for u in utts},
                    utt2intent={u.utt_id: u.intent for u in utts}).save(out_dir / name)
            report.dirs[name] = len(utts)
    report.seconds = time.time() - start
    return report
