"""The `sprune` command: one entry point, one module per subcommand.

Each subcommand lives in `sprune/bin/<name>.py` and defines

    HELP: str                                  one line for `sprune --help`
    add_arguments(parser: ArgumentParser)      its options
    run(args: Namespace) -> int | None         does the work; raises UserError on bad input

Modules are imported only when their subcommand runs, so `sprune --help` stays fast.
A `UserError` (and an argparse usage error) prints one line to stderr and exits 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from typing import NoReturn, Sequence

from sprune.errors import EXIT_USER_ERROR, SharedUserError, UserError
from sprune.malloc import keep_freed_memory

# What torchrun sets (`sprune.training.distributed.ENVIRONMENT`, which imports torch).
TORCHRUN_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# name -> (module, one-line help). Help is duplicated here so `sprune --help` imports nothing.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("sprune.bin.data", "validate, subset, combine and filter Kaldi data dirs"),
    "synth": ("sprune.bin.synth", "speak the offline multilingual intent corpus with espeak-ng"),
    "speak": ("sprune.bin.speak", "speak a text file with espeak-ng into a Kaldi data dir"),
    "mltext": ("sprune.bin.mltext", "sentences in en, fr, it, nl from Debian text packages"),
    "prep": ("sprune.bin.prep", "Kaldi data dirs from MINDS-14, LibriSpeech, Common Voice, MLS"),
    "config": ("sprune.bin.config", "print a task config as runs resolve it (or one --get key)"),
    "prune": ("sprune.bin.prune", "fine-tune a task model with a pruning method (or dense)"),
    "decode": ("sprune.bin.decode", "decode with a transducer or CTC run, fusing an LM / n-gram"),
    "lexicon": ("sprune.bin.lexicon", "spell the words of a text in a CTC run's units"),
    "evaluate": ("sprune.bin.evaluate", "evaluate a finished run folder on a data dir"),
    "results": ("sprune.bin.results", "collect runs into RESULTS.md, a CSV and a PNG plot"),
    "analyze": ("sprune.bin.analyze", "pruning curves, mask IOU and transfer grids of an exp"),
    "fidelity": ("sprune.bin.fidelity", "papers' claims checked against a results.csv"),
    "pathways": ("sprune.bin.pathways", "export one language's pathway of a pathways run"),
    "pretrain": ("sprune.bin.pretrain", "HuBERT-style pretraining (MFCC k-means units)"),
    "probe": ("sprune.bin.probe", "linear probe of frozen upstreams on intents (vs random init)"),
    "shrink": ("sprune.bin.shrink", "shrink an upstream with trained structured masks"),
    "bench": ("sprune.bin.bench", "parameters, FLOPs and latency of upstreams side by side"),
    "l0prune": ("sprune.bin.l0prune", "structured L0 pruning of an upstream by distillation"),
    "downstream": ("sprune.bin.downstream", "frozen-upstream intent and CTC heads, side by side"),
    "superb": ("sprune.bin.superb", "SUPERB via s3prl: export, task commands, Table 1 + score"),
    "phonemize": ("sprune.bin.phonemize", "write phone transcripts (text.phones) with espeak-ng"),
    "lm": ("sprune.bin.lm", "Transformer LMs (paper 002): train, prune, evaluate, shrink"),
}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def split_named(value: str, option: str) -> tuple[str, str]:
    """`NAME=PATH` of a repeatable option (e.g. `--upstream dense=DIR`) -> (NAME, PATH);
    anything else is a `UserError` naming the option."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise UserError(f"{option} '{value}' must look like NAME=PATH")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sprune",
        description="Prune self-supervised speech models (wav2vec 2.0, HuBERT, WavLM) and "
        "Transformer LMs. Run `sprune <command> --help` for each command's options.",
    )
    from sprune import __version__

    parser.add_argument("--version", action="version", version=f"sprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=OneLineParser)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _subcommand_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = OneLineParser(prog=f"sprune {name}", description=getattr(module, "__doc__", help_text))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        if argv and not argv[0].startswith("-"):
            top.error(f"unknown command '{argv[0]}'; known: {', '.join(SUBCOMMANDS)}")
        top.parse_args(argv)  # --help / --version exit here
        top.print_help()
        return EXIT_USER_ERROR
    name = argv[0]
    keep_freed_memory()
    parser, module = _subcommand_parser(name)
    args = parser.parse_args(argv[1:])
    # torch (about 1.5 s to import) only in a process torchrun started: data, synth, results
    # and the like never need it, and a recipe calls them many times
    distributed = None
    if any(key in os.environ for key in TORCHRUN_ENVIRONMENT):
        from sprune.training import distributed
    is_main, first_on_machine = True, True
    try:
        if distributed is not None:
            # join the process group; rank 0 alone prints results
            world = distributed.init_from_environment()
            is_main, first_on_machine = world.is_main, world.local_rank == 0
        with open(os.devnull, "w") as quiet, \
                contextlib.redirect_stdout(sys.stdout if is_main else quiet):
            return int(module.run(args) or 0)
    except UserError as err:
        # every process of a run meets the same bad input: one line from each machine (its
        # first process), and a SharedUserError (one for all by construction) from rank 0
        if is_main or (first_on_machine and not isinstance(err, SharedUserError)):
            print(f"sprune {name}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"sprune {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        if distributed is not None:
            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
