"""Write phone transcripts (`text.phones`) beside the `text` of data dirs, with espeak-ng.

  sprune phonemize data/train data/dev data/test
  sprune phonemize data/cv_nl --lang-voice nl-NL=nl      # a language sprune has no table for
  sprune phonemize data/mine --voice en-us                # no utt2lang: one voice for all

Each utterance is phonemized with the espeak-ng voice of its language (utt2lang), as the
synthetic corpus speaks it. CTC with `ctc.units: phone` reads `text.phones`; run this in the
recipe's data stage, once, and again after `sprune data subset` / `combine`.
"""
from __future__ import annotations

import argparse

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="data dirs with text (and utt2lang)")
    parser.add_argument("--voice", help="espeak-ng voice for utterances of languages without "
                                        "one (and for dirs without utt2lang)")
    parser.add_argument("--lang-voice", action="append", default=[], metavar="LANG=VOICE",
                        help="espeak-ng voice of a language tag, e.g. nl-NL=nl (repeatable)")


def parse_lang_voices(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        lang, sep, voice = item.partition("=")
        if not sep or not lang.strip() or not voice.strip():
            raise UserError(f"--lang-voice '{item}' must look like LANG=VOICE, e.g. nl-NL=nl")
        out[lang.strip()] = voice.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from sprune.data.phonemize import phonemize_data_dir

    lang_voices = parse_lang_voices(args.lang_voice)
    for path in args.dirs:
        out = phonemize_data_dir(path, lang_voices, args.voice)
        print(f"wrote {out}")
    return 0
