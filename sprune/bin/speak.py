"""Speak a text file with espeak-ng into a Kaldi data dir: one split of a spoken corpus.

Each line of --text (one sentence per line, UTF-8, plain or .gz; e.g. data/kjv/test.txt of
`sprune lm text`) is said by one synthetic speaker (--speakers-per-line N: by N different
ones), the least-loaded of the split's speakers in a seeded order. Empty lines and lines of
more than --max-words words are skipped; the first --max-lines of the rest are spoken.

Writes 16 kHz mono 16-bit WAVs to WAV_DIR/<out name>/<utt id>.wav and the Kaldi data dir
OUT (wav.scp with absolute paths, text, utt2spk, spk2utt, utt2lang), where
utt id = <speaker>-<line id>, speaker = <lang>-<split>-sNN (e.g. en-US-test-s03-Ge1:1) and
the line id comes from --ids (the .ids file written beside the text: one id per line, same
order) or is the line number. The text file holds the line with its whitespace collapsed.

The same --seed gives byte-identical audio. A killed run resumes (wavs already written are
kept; a larger --max-lines speaks only the new lines); WAV_DIR/<out name>/speak.json pins
the seed, split, voice and the text and ids files, so a run with other inputs into the same
wav dir is refused instead of mixing them. The data dir is written last, in one piece.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sprune.errors import UserError

HELP = "speak a text file with espeak-ng into a Kaldi data dir"

EPILOG = """\
speaker-disjoint splits:
  --split names the split being spoken and is required. espeak-ng's 32 human-sounding voice
  variants are partitioned once and for all into three pools: 20 for train, 6 for dev and
  6 for test (sprune.data.speak.SPEAKER_POOLS). A split's speakers (variant x rate x pitch,
  drawn from --seed) come from its own pool only and their ids name the split, so a train,
  a dev and a test dir never share a speaker, or even a voice variant, whatever seeds and
  --speakers each run uses: speak each split with its own command and --split.
  --speakers defaults to one per variant of the pool (train 20, dev 6, test 6); more reuse
  the pool's variants with other rates and pitches.

examples:
  sprune speak --split train --text data/kjv/train.txt --ids data/kjv/train.ids \\
      --out data/asr_train --wav-dir data/wav --speakers 12 --seed 1 \\
      --max-lines 3000 --max-words 20 --jobs 2
  sprune speak --split dev --text data/kjv/dev.txt --ids data/kjv/dev.ids \\
      --out data/asr_dev --wav-dir data/wav --speakers 4 --seed 2 --max-lines 300 --max-words 20
  sprune speak --split test --text data/kjv/test.txt --ids data/kjv/test.ids \\
      --out data/asr_test --wav-dir data/wav --speakers 4 --seed 3 --max-lines 300 --max-words 20
  sprune data validate data/asr_test
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sprune.data.speak import SPLITS

    parser.epilog = EPILOG
    parser.add_argument("--text", required=True, type=Path, metavar="FILE",
                        help="the text to speak: one sentence per line (UTF-8, plain or .gz)")
    parser.add_argument("--ids", type=Path, default=None, metavar="FILE",
                        help="one id per line of --text, same order (e.g. `sprune lm text`'s "
                        "<split>.ids); default: the line numbers")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the Kaldi data dir to write")
    parser.add_argument("--split", required=True, choices=SPLITS,
                        help="which split this is: its speakers come from that split's voice "
                        "pool, disjoint from the other two (see below)")
    parser.add_argument("--wav-dir", type=Path, default=None, metavar="DIR",
                        help="wavs go to DIR/<out name>/ (default: wav/ beside --out)")
    parser.add_argument("--speakers", type=int, default=None, metavar="N",
                        help="speakers of this split (default: one per voice variant of its "
                        "pool: train 20, dev 6, test 6; fewer for fewer utterances)")
    parser.add_argument("--speakers-per-line", type=int, default=1, metavar="N",
                        help="how many different speakers say each line (default: %(default)s)")
    parser.add_argument("--max-lines", type=int, default=None, metavar="N",
                        help="speak only the first N lines that pass --max-words (default: all)")
    parser.add_argument("--max-words", type=int, default=None, metavar="N",
                        help="skip lines of more than N words (long sentences are slow to "
                        "speak and to train on; default: no limit)")
    parser.add_argument("--lang", default="en-US", metavar="TAG",
                        help="language tag for utt2lang; en-US, fr-FR, ... (short names like "
                        "fr too) also pick the espeak-ng voice (default: %(default)s)")
    parser.add_argument("--voice", default=None, metavar="NAME",
                        help="espeak-ng voice (default: the --lang's voice, e.g. en-us; "
                        "required for other tags; see `espeak-ng --voices`)")
    parser.add_argument("--seed", type=int, default=0,
                        help="draws speakers, who says which line and the audio variation "
                        "(default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, metavar="N",
                        help="worker processes (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sprune.data.speak import speak_text

    if args.ids is not None and not args.ids.is_file():
        raise UserError(f"--ids {args.ids}: no such file; give the ids written with the text "
                        "(one per line) or leave --ids out to use line numbers")
    print(f"sprune speak: {args.text} -> {args.out} ({args.split} speakers, seed {args.seed}, "
          f"{args.jobs} jobs)", flush=True)
    report = speak_text(args.text, args.out, args.split, ids=args.ids, wav_dir=args.wav_dir,
                        lang=args.lang, voice=args.voice, n_speakers=args.speakers,
                        speakers_per_line=args.speakers_per_line, max_lines=args.max_lines,
                        max_words=args.max_words, seed=args.seed, jobs=args.jobs,
                        progress=not args.quiet)
    skipped = []
    if report.too_long:
        skipped.append(f"{report.too_long} over {args.max_words} words")
    if report.empty:
        skipped.append(f"{report.empty} empty")
    print(f"  {report.spoken_lines} of {report.lines} lines spoken"
          + (f" ({', '.join(skipped)} skipped)" if skipped else "")
          + f" by {report.speakers} speakers, {args.speakers_per_line} per line")
    print(f"sprune speak: {report.utterances} utterances ({report.written} spoken, "
          f"{report.reused} already there) in {report.seconds:.1f} s with {report.backend}; "
          f"wavs in {report.wav_dir}")
    return 0
