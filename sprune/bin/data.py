"""Validate, inspect, subset, combine and filter Kaldi data dirs.

  sprune data validate DIR [DIR ...] [--no-audio]    report every problem (exit 2 if any)
  sprune data info DIR [--no-audio]                  utterances, speakers, languages, hours
  sprune data subset SRC DST (--utt-list FILE | --speakers FILE | --langs L1,L2 | --first N)
  sprune data combine DST SRC [SRC ...]
  sprune data filter SRC DST [--min-seconds X] [--max-seconds Y]

A data dir holds wav.scp and utt2spk (required), spk2utt, and optionally text, utt2lang and
utt2intent; audio must be 16 kHz mono. Relative audio paths in wav.scp are resolved from
the current directory, as in Kaldi. Outputs are written atomically: an interrupted command
leaves no half-written dir. Run `sprune data <action> --help` for each action.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from sprune.data.audio import AudioInfo, audio_info
from sprune.data.datadir import OPTIONAL_UTT_FILES, DataDir
from sprune.data.validate import PROGRESS_MIN_UTTS, count_errors, validate_data_dir
from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True,
                                    parser_class=type(parser))

    def action(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help_text, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    p = action("validate", "report every problem of one or more data dirs",
               "Check data dirs and print every problem as 'file:line: message', then a summary.\n"
               "Exit status 0 when all dirs are clean (warnings allowed), 2 otherwise.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="data dirs to check")
    p.add_argument("--no-audio", action="store_true",
                   help="skip opening the audio (existence, decoding, rate, channels)")

    p = action("info", "print utterance, speaker, language, intent counts and hours",
               "Summarise a data dir. Hours are read from the audio headers.")
    p.add_argument("dir", metavar="DIR", help="data dir to describe")
    p.add_argument("--no-audio", action="store_true", help="do not open the audio (no hours)")

    p = action("subset", "copy part of a data dir",
               "Write the utterances of SRC selected by exactly one of the options to DST.")
    p.add_argument("src", metavar="SRC", help="data dir to read")
    p.add_argument("dst", metavar="DST", help="data dir to write (replaced if it exists)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--utt-list", metavar="FILE",
                     help="keep the utterances listed in FILE (first field of each line)")
    how.add_argument("--speakers", metavar="FILE",
                     help="keep the utterances of the speakers listed in FILE (first field)")
    how.add_argument("--langs", metavar="L1,L2",
                     help="keep these languages, comma separated (needs utt2lang), e.g. en-US,fr-FR")
    how.add_argument("--first", type=int, metavar="N",
                     help="keep the first N utterances in sorted order")

    p = action("combine", "merge data dirs with distinct utterance ids",
               "Write the union of the SRC dirs to DST. An optional file (text, utt2lang,\n"
               "utt2intent) is kept only when every SRC has it.")
    p.add_argument("dst", metavar="DST", help="data dir to write (replaced if it exists)")
    p.add_argument("srcs", nargs="+", metavar="SRC", help="data dirs to merge")

    p = action("filter", "keep utterances whose duration is in a range",
               "Write the utterances of SRC lasting between --min-seconds and --max-seconds\n"
               "(inclusive) to DST. Durations are read from the audio headers.")
    p.add_argument("src", metavar="SRC", help="data dir to read")
    p.add_argument("dst", metavar="DST", help="data dir to write (replaced if it exists)")
    p.add_argument("--min-seconds", type=float, default=0.0, metavar="X",
                   help="shortest duration kept (default: 0)")
    p.add_argument("--max-seconds", type=float, default=float("inf"), metavar="Y",
                   help="longest duration kept (default: no limit)")


def run(args: argparse.Namespace) -> int | None:
    return {"validate": _validate, "info": _info, "subset": _subset, "combine": _combine,
            "filter": _filter}[args.action](args)


def _validate(args: argparse.Namespace) -> int:
    n_errors = n_warnings = 0
    bad_dirs = []
    for directory in args.dirs:
        problems = validate_data_dir(directory, check_audio=not args.no_audio)
        for problem in problems:
            print(problem, flush=True)
        errors = count_errors(problems)
        n_errors += errors
        n_warnings += len(problems) - errors
        if errors:
            bad_dirs.append(directory)
    warnings = f", {n_warnings} warning(s)" if n_warnings else ""
    if n_errors:
        raise UserError(f"{n_errors} problem(s){warnings} in {len(bad_dirs)} of {len(args.dirs)} "
                        f"data dir(s) ({', '.join(bad_dirs)}); fix the lines listed above")
    print(f"{len(args.dirs)} data dir(s) valid{warnings}")
    return 0


def durations(data: DataDir) -> dict[str, float]:
    """Utterance id -> duration in seconds, from the audio headers (progress bar on big dirs)."""
    from tqdm import tqdm

    out = {}
    for utt in tqdm(data.utt_ids, desc=f"reading audio headers of {data.path}", unit="utt",
                    disable=len(data) <= PROGRESS_MIN_UTTS, leave=False):
        try:
            info: AudioInfo = audio_info(data.wav_scp[utt])
        except UserError as err:
            raise UserError(f"utterance '{utt}' of {data.path}: {err}; "
                            f"run `sprune data validate {data.path}`") from None
        out[utt] = info.seconds
    return out


def _counts(table: dict[str, str]) -> str:
    counts = Counter(table.values())
    return f"{len(counts)} (" + ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) + ")"


def _info(args: argparse.Namespace) -> int:
    data = DataDir.load(args.dir)
    rows = [("dir", str(data.path)), ("utterances", str(len(data))),
            ("speakers", str(len(set(data.utt2spk.values()))))]
    if data.utt2lang is not None:
        rows.append(("languages", _counts(data.utt2lang)))
    if data.utt2intent is not None:
        rows.append(("intents", _counts(data.utt2intent)))
    if data.text is not None:
        rows.append(("words", str(sum(len(t.split()) for t in data.text.values()))))
    if not args.no_audio and len(data):
        seconds = list(durations(data).values())
        rows.append(("hours", f"{sum(seconds) / 3600:.3f} (utterances of {min(seconds):.2f} to "
                              f"{max(seconds):.2f} s, mean {sum(seconds) / len(seconds):.2f} s)"))
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    return 0


def _read_list(path: str) -> list[str]:
    """First field of each non-empty line of a list file."""
    if not Path(path).is_file():
        raise UserError(f"list file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def _save(data: DataDir, dst: str, what: str) -> None:
    if not len(data):
        raise UserError(f"{what} selects no utterance; {dst} was not written")
    data.save(dst)
    print(f"wrote {dst}: {len(data)} utterances, {len(data.spk2utt)} speakers ({what})")


def _subset(args: argparse.Namespace) -> int:
    data = DataDir.load(args.src)
    if args.utt_list is not None:
        keep = _read_list(args.utt_list)
        what = f"{len(keep)} listed in {args.utt_list}"
    elif args.speakers is not None:
        speakers = set(_read_list(args.speakers))
        unknown = sorted(speakers - set(data.utt2spk.values()))
        if unknown:
            raise UserError(f"{args.speakers}: speaker '{unknown[0]}' is not in {args.src}/utt2spk "
                            f"({len(unknown)} unknown)")
        keep = [u for u in data.utt_ids if data.utt2spk[u] in speakers]
        what = f"{len(speakers)} speakers listed in {args.speakers}"
    elif args.langs is not None:
        if data.utt2lang is None:
            raise UserError(f"{args.src} has no utt2lang, so --langs cannot select from it; "
                            "use --utt-list or --speakers")
        langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
        known = set(data.utt2lang.values())
        if not langs or any(lang not in known for lang in langs):
            raise UserError(f"--langs '{args.langs}': {args.src} has languages "
                            f"{', '.join(sorted(known))}; pick among them, comma separated")
        keep = [u for u in data.utt_ids if data.utt2lang[u] in langs]
        what = f"languages {','.join(langs)}"
    else:
        if not 0 < args.first <= len(data):
            raise UserError(f"--first {args.first}: {args.src} has {len(data)} utterances; "
                            f"give N between 1 and {len(data)}")
        keep = data.utt_ids[:args.first]
        what = f"first {args.first}"
    _save(data.subset(keep), args.dst, what)
    return 0


def _combine(args: argparse.Namespace) -> int:
    dirs = [DataDir.load(src) for src in args.srcs]
    for name in OPTIONAL_UTT_FILES:
        lacking = [str(d.path) for d in dirs if d.tables()[name] is None]
        if lacking and len(lacking) < len(dirs):
            print(f"note: {name} is not written: {', '.join(lacking)} lack(s) it")
    _save(DataDir.combine(dirs), args.dst, f"{len(dirs)} dirs combined")
    return 0


def _filter(args: argparse.Namespace) -> int:
    if args.min_seconds < 0 or args.max_seconds < args.min_seconds:
        raise UserError(f"--min-seconds {args.min_seconds} / --max-seconds {args.max_seconds}: "
                        "need 0 <= min <= max")
    data = DataDir.load(args.src)
    seconds = durations(data)
    keep = [u for u, s in seconds.items() if args.min_seconds <= s <= args.max_seconds]
    _save(data.subset(keep), args.dst,
          f"{len(keep)} of {len(data)} between {args.min_seconds:g} and {args.max_seconds:g} s")
    return 0
