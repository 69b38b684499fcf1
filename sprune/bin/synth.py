"""Speak the offline multilingual spoken-intent corpus (MINDS-14-like) with espeak-ng.

Bank customers ask for one of the 14 MINDS-14 e-banking intents (balance, freeze, abroad,
...) in several phrasings per language. Synthetic speakers (espeak-ng voice variant x rate
x pitch, drawn from --seed) are split by speaker into train / dev / test, so test speakers
are never heard in training. Every phrasing is said by several speakers of each split.

Writes 16 kHz mono 16-bit WAVs under OUT/wav/<lang>/ and one Kaldi data dir per split and
language, OUT/<split>_<lang> (e.g. OUT/train_en-US, OUT/test_fr-FR), holding wav.scp,
text (the spoken sentence), utt2spk, spk2utt, utt2lang and utt2intent. The same seed gives
byte-identical audio. A killed run resumes: wavs already written are kept.

Languages: en-US en-GB en-AU fr-FR de-DE es-ES it-IT nl-NL pl-PL (short names: en=en-US,
gb=en-GB, au=en-AU, fr, de, es, it, nl, pl; 'all' = all nine). en-AU is spoken with the
British voice: espeak-ng has no Australian one.

The defaults give 6 languages x 14 intents x 6 phrasings x 4 speakers = 2,016 utterances.

Shorter audio (training time grows with it): a faster --rate-range, and --trim-silence S,
which keeps at most S seconds of silence before and after the speech of each utterance
(silence: samples below 1 % of the utterance's peak) instead of espeak-ng's own (a few ms
before; after, about 0.45 s at 130 words/min, 0.25 s at 190, 0.07 s at 300) plus 50-400 ms
added at each end. A corpus dir made with other options (these two included) is refused:
use another --out or delete it.

example:
  sprune synth --out data/synth --langs en-US,fr --jobs 2
  sprune synth --out data/synth_short --rate-range 170,230 --trim-silence 0.1
  sprune synth --list-langs
"""
from __future__ import annotations

import argparse

from sprune.data.phrases import (DEFAULT_LANGUAGES, LANGUAGES, load_phrases, parse_intents,
                                 parse_languages)
from sprune.data.synth import RATE_LIMITS, RATE_RANGE, SILENCE_THRESHOLD
from sprune.errors import UserError

HELP = "speak the offline multilingual intent corpus with espeak-ng"


def _numbers(text: str, kind: type, option: str, example: str) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"{option} '{text}' is not a comma-separated list of numbers; "
                        f"use e.g. {option} {example}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR",
                        help="output dir for wav/ and the <split>_<lang> data dirs (required)")
    parser.add_argument("--langs", metavar="LIST",
                        help="comma-separated languages, or 'all' "
                        f"(default: {','.join(DEFAULT_LANGUAGES)})")
    parser.add_argument("--intents", default="all", metavar="LIST",
                        help="comma-separated subset of the 14 intents (default: all)")
    parser.add_argument("--phrasings", type=int, default=None, metavar="N",
                        help="use the first N phrasings of each intent (default: all, 6)")
    parser.add_argument("--speakers", type=int, default=10, metavar="N",
                        help="synthetic speakers per language (default: %(default)s)")
    parser.add_argument("--speaker-split", default="0.6,0.2,0.2", metavar="TRAIN,DEV,TEST",
                        help="fractions of the speakers in train, dev and test; dev and test "
                        "get at least one each (default: %(default)s)")
    parser.add_argument("--speakers-per-phrasing", default="2,1,1", metavar="TRAIN,DEV,TEST",
                        help="how many speakers of each split say every phrasing "
                        "(default: %(default)s)")
    parser.add_argument("--rate-range", default=f"{RATE_RANGE[0]},{RATE_RANGE[1]}",
                        metavar="LO,HI",
                        help="speaking rates of the speakers, words/min, inclusive; "
                        f"{RATE_LIMITS[0]} <= LO <= HI <= {RATE_LIMITS[1]} "
                        "(default: %(default)s)")
    parser.add_argument("--trim-silence", type=float, default=None, metavar="SECONDS",
                        help="keep at most SECONDS of silence (samples below "
                        f"{SILENCE_THRESHOLD * 100:g} %% of the peak) before and after the "
                        "speech of each utterance and add none, e.g. 0.1 (default: off)")
    parser.add_argument("--seed", type=int, default=0,
                        help="draws speakers and audio variation (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, metavar="N",
                        help="worker processes (default: %(default)s)")
    parser.add_argument("--list-langs", action="store_true",
                        help="print '<tag> <espeak-ng voice>' for each of --langs (all when "
                        "--langs is not given) and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.list_langs:
        for lang in (parse_languages(args.langs) if args.langs else LANGUAGES):
            print(f"{lang} {load_phrases(lang).voice}")
        return 0
    if not args.out:
        raise UserError("--out DIR is required: where to write the corpus")
    from sprune.data.synth import synthesize_corpus

    langs = parse_languages(args.langs) if args.langs else list(DEFAULT_LANGUAGES)
    intents = parse_intents(args.intents)
    split = _numbers(args.speaker_split, float, "--speaker-split", "0.6,0.2,0.2")
    per_phrasing = _numbers(args.speakers_per_phrasing, int, "--speakers-per-phrasing", "2,1,1")
    rate_range = _numbers(args.rate_range, int, "--rate-range", "130,190")
    print(f"sprune synth: {len(langs)} languages ({', '.join(langs)}), {len(intents)} of 14 "
          f"intents, {args.speakers} speakers per language, seed {args.seed}, {args.jobs} jobs "
          f"-> {args.out}", flush=True)
    report = synthesize_corpus(args.out, langs, seed=args.seed,
                               phrasings_per_intent=args.phrasings, n_speakers=args.speakers,
                               splits=split, speakers_per_phrasing=per_phrasing,
                               intents=intents, jobs=args.jobs, progress=not args.quiet,
                               rate_range=rate_range, trim_silence=args.trim_silence)
    total = sum(report.dirs.values())
    for name, count in report.dirs.items():
        print(f"  {name:<16} {count:>5} utterances")
    print(f"sprune synth: {total} utterances ({report.written} spoken, {report.reused} already "
          f"there) in {report.seconds:.1f} s with {report.backend}")
    return 0

