"""Build Kaldi data dirs from real corpora found on local disk (or downloaded when possible).

  sprune prep minds14 --root DIR --subset en-US --out data
      MINDS-14 -> data/<subset>/{train,dev,test}: 16 kHz WAVs (resampled from 8 kHz once per
      language into data/audio/<lang>/), text, utt2spk, utt2lang, utt2intent. Subsets:
      en-US, en-ALL (en-US+en-GB+en-AU), en-fr (en-US+fr-FR), top7 (it-IT en-AU nl-NL de-DE
      pt-PT en-GB ko-KR), all, or one language tag. The split is deterministic for --seed and
      disjoint in speakers as far as MINDS-14 allows (it has no speaker ids: every recording
      is its own pseudo-speaker), stratified by language and intent.
  sprune prep librispeech --root DIR --splits test-clean,test-other --out data
      LibriSpeech splits -> data/test_clean, data/test_other, ... (wav.scp points at the FLACs).
  sprune prep librilight --root DIR --which 1h --out data
      Libri-light fine-tuning sets -> data/train_10min | train_1h | train_10h
      (10min is fold --fold of 1h/; other folds are written to train_10min_fold<k>).
  sprune prep commonvoice --root DIR --langs nl,fr --out data [--train-hours 1]
      Common Voice locales -> data/<locale>/{train,dev,test} (the release's speaker-disjoint
      splits; MP3 clips decoded and resampled once to 16 kHz WAVs in data/audio/<locale>/).
  sprune prep mls --root DIR --langs fr,it,nl --out data [--train-set 1h] [--max-hours 2]
      Multilingual LibriSpeech -> data/<lang>/{train|train_10min|train_1h|train_10h,dev,test}
      (speaker-disjoint splits; FLAC in place, Opus decoded once to 16 kHz WAVs in
      data/audio/<lang>/; utt2lang fr-FR, it-IT, nl-NL, en-US, ...).

--root is the folder holding the corpus as distributed (MInDS-14.zip or MInDS-14/,
LibriSpeech/, librispeech_finetuning/, mls_<language>[_opus]/). --download fetches it first
(Hugging Face Hub PolyAI/minds14, openslr.org/12, dl.fbaipublicfiles.com/librilight,
dl.fbaipublicfiles.com/mls) into --download-dir.
Common Voice has no --download: its releases need a sign-in at commonvoice.mozilla.org.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sprune.errors import UserError

HELP = ("build Kaldi data dirs from real corpora (MINDS-14, LibriSpeech, Libri-light, Common "
        "Voice, Multilingual LibriSpeech)")


def _add_source(parser: argparse.ArgumentParser, corpus: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", type=Path, help=f"local copy of {corpus}")
    source.add_argument("--download", action="store_true",
                        help=f"download {corpus} first (needs network access)")
    parser.add_argument("--download-dir", type=Path, default=None,
                        help="where --download (and unpacking a zip) puts files "
                             "(default: <out>/downloads)")
    parser.add_argument("--out", type=Path, default=Path("data"),
                        help="output folder for the data dirs (default: data)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    corpora = parser.add_subparsers(dest="corpus", metavar="<corpus>", required=True)

    minds = corpora.add_parser("minds14", help="MINDS-14 spoken intents (paper 000 subsets)",
                               description="MINDS-14 -> <out>/<subset>/{train,dev,test}")
    _add_source(minds, "MINDS-14")
    minds.add_argument("--subset", default="en-US",
                       help="en-US, en-ALL, en-fr, top7, all, or a language tag (default: en-US)")
    minds.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    minds.add_argument("--dev-frac", type=float, default=0.1, help="dev share (default: 0.1)")
    minds.add_argument("--test-frac", type=float, default=0.1, help="test share (default: 0.1)")

    libri = corpora.add_parser("librispeech", help="LibriSpeech dev/test/train splits",
                               description="LibriSpeech splits -> <out>/<split with _>")
    _add_source(libri, "LibriSpeech")
    libri.add_argument("--splits", default="test-clean,test-other",
                       help="comma-separated splits (default: test-clean,test-other)")

    light = corpora.add_parser("librilight", help="Libri-light limited-resource training sets",
                               description="Libri-light -> <out>/train_<which>")
    _add_source(light, "Libri-light (librispeech_finetuning)")
    light.add_argument("--which", default="1h", help="10min, 1h or 10h (default: 1h)")
    light.add_argument("--fold", type=int, default=0,
                       help="which 1h/<fold> is the 10 min set, 0..5 (default: 0)")

    cv = corpora.add_parser("commonvoice", help="Common Voice locales (paper 001 H2L / CSR)",
                            description="Common Voice -> <out>/<locale>/{train,dev,test}")
    cv.add_argument("--root", type=Path, required=True,
                    help="release folder holding <locale>/{train,dev,test}.tsv and clips/")
    cv.add_argument("--langs", required=True, help="comma-separated locales, e.g. nl,sv-SE")
    cv.add_argument("--splits", default="train,dev,test",
                    help="comma-separated splits (default: train,dev,test)")
    cv.add_argument("--train-hours", type=float, default=None, metavar="H",
                    help="keep a random subset of the training clips of at most H hours "
                         "(paper 001: 1); default: all")
    cv.add_argument("--seed", type=int, default=0, help="seed of --train-hours (default: 0)")
    cv.add_argument("--out", type=Path, default=Path("data"),
                    help="output folder for the data dirs (default: data)")

    mls = corpora.add_parser("mls", help="Multilingual LibriSpeech (openslr 94) languages",
                             description="MLS -> <out>/<lang>/{train[_<set>],dev,test}")
    _add_source(mls, "MLS (mls_<language>[_opus]/ folders)")
    mls.add_argument("--langs", required=True,
                     help="comma-separated languages: en, de, nl, fr, es, it, pt, pl "
                          "(or french, ...)")
    mls.add_argument("--splits", default="train,dev,test",
                     help="comma-separated splits (default: train,dev,test)")
    mls.add_argument("--train-set", default="full",
                     help="full, or a limited-supervision set: 10min, 1h, 10h (default: full)")
    mls.add_argument("--fold", type=int, default=0,
                     help="which 1hr/<fold> is the 10 min set, 0..5 (default: 0)")
    mls.add_argument("--audio", choices=("opus", "flac"), default=None,
                     help="which copy to read or download (default: the one under --root, "
                          "Opus when both; --download: opus)")
    mls.add_argument("--max-utts", type=int, default=None, metavar="N",
                     help="keep a random subset of at most N utterances of each split")
    mls.add_argument("--max-hours", type=float, default=None, metavar="H",
                     help="keep a random subset of at most H hours of each split")
    mls.add_argument("--seed", type=int, default=0,
                     help="seed of --max-utts / --max-hours (default: 0)")
    mls.add_argument("--base-url", default=None, metavar="URL",
                     help="where --download fetches mls_<language>[_opus].tar.gz "
                          "(default: dl.fbaipublicfiles.com/mls)")


def librilight_dir_name(which: str, fold: int) -> str:
    """Data dir name of a Libri-light set: train_10min, train_1h, ... (non-zero 10 min folds
    get a _fold<k> suffix)."""
    name = f"train_{which}"
    return f"{name}_fold{fold}" if which == "10min" and fold else name


def _split_list(value: str, option: str = "--splits",
                example: str = "test-clean,test-other") -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise UserError(f"{option} is empty; give e.g. {option} {example}")
    return items


def run(args: argparse.Namespace) -> int:
    from sprune.data import commonvoice, librispeech, minds14

    if args.corpus == "mls":
        return _run_mls(args)
    if args.corpus == "commonvoice":
        splits = _split_list(args.splits, example="train,dev,test")
        for locale in _split_list(args.langs, "--langs", "nl,sv-SE"):
            commonvoice.prepare_commonvoice(args.root, args.out, locale, splits,
                                            args.train_hours, args.seed)
        return 0
    download_dir = args.download_dir or args.out / "downloads"
    if args.corpus == "minds14":
        minds14.subset_languages(args.subset)  # fail on a bad subset before any download
        root = minds14.download_minds14(download_dir) if args.download else args.root
        minds14.prepare_minds14(root, args.out, subset=args.subset, seed=args.seed,
                                dev_frac=args.dev_frac, test_frac=args.test_frac,
                                scratch=download_dir)
    elif args.corpus == "librispeech":
        splits = _split_list(args.splits)
        for split in splits:
            if split not in librispeech.LIBRISPEECH_SPLITS:
                raise UserError(f"--splits: unknown LibriSpeech split '{split}'; use "
                                f"{', '.join(librispeech.LIBRISPEECH_SPLITS)}")
        root = librispeech.download_librispeech(download_dir, splits) if args.download else args.root
        for split in splits:
            librispeech.prepare_librispeech(root, split, args.out / split.replace("-", "_"))
    else:
        librispeech.librilight_folders(args.which, args.fold)  # validate before downloading
        root = librispeech.download_librilight(download_dir) if args.download else args.root
        librispeech.prepare_librilight(root, args.which,
                                       args.out / librilight_dir_name(args.which, args.fold),
                                       fold=args.fold)
    return 0


def _run_mls(args: argparse.Namespace) -> int:
    from sprune.data import mls

    codes = [mls.language_code(name) for name in _split_list(args.langs, "--langs", "fr,it,nl")]
    splits = _split_list(args.splits, example="train,dev,test")
    for split in splits:
        if split not in mls.SPLITS:
            raise UserError(f"--splits: unknown MLS split '{split}'; use "
                            f"{', '.join(mls.SPLITS)}")
    mls.check_train_set(args.train_set, args.fold)   # fail before any download
    mls.check_limits(args.max_utts, args.max_hours)
    root = args.root
    if args.download:
        root = args.download_dir or args.out / "downloads"
        for code in codes:
            mls.download_mls(root, code, args.audio or "opus", args.base_url or mls.MLS_URL)
    for code in codes:
        mls.prepare_mls(root, args.out, code, splits, train_set=args.train_set, fold=args.fold,
                        max_utts=args.max_utts, max_hours=args.max_hours, seed=args.seed,
                        audio=args.audio or ("opus" if args.download else None))
    return 0
