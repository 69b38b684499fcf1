"""Language models (paper 002): train, prune, evaluate and shrink Transformer LMs, and move
them to and from ESPnet.

  sprune lm text ...     prepare LM text (a corpus or a text file) into train/dev/test
  sprune lm bpe ...      train the sentencepiece BPE units on the LM training text
  sprune lm train ...    train a dense LM (or a from-scratch baseline of a given size)
  sprune lm prune ...    prune an LM: criterion x method x schedule, to a target size
  sprune lm eval ...     perplexity, parameters, FLOPs per token and per-token latency
  sprune lm shrink ...   turn a structured / low-rank pruned LM into a smaller dense one
  sprune lm import ...   an espnet2 TransformerLM checkpoint -> a sprune LM
  sprune lm export ...   a sprune LM -> an espnet2 TransformerLM checkpoint
  sprune lm results ...  RESULTS.md, results.csv and PNG plots of an LM experiment
  sprune lm ngram ...    a token n-gram of transcripts, for LODR in `sprune decode`
  sprune lm arpa ...     a word n-gram (ARPA, Kneser-Ney) of transcripts, for CTC decoding

Run `sprune lm <command> --help` for each command's options.
"""
from __future__ import annotations

import argparse
import importlib

from sprune.errors import UserError

# name -> (module, one-line help); each module defines add_arguments(parser) and run(args),
# like the top-level commands (sprune/cli.py).
LM_COMMANDS: dict[str, tuple[str, str]] = {
    "text": ("sprune.bin.lm_text", "prepare LM text into train/dev/test splits"),
    "bpe": ("sprune.bin.lm_bpe", "train sentencepiece BPE units on the LM training text"),
    "train": ("sprune.bin.lm_train", "train a dense Transformer LM"),
    "prune": ("sprune.bin.lm_prune", "prune an LM (criterion x method x schedule) and fine-tune"),
    "eval": ("sprune.bin.lm_eval", "perplexity, parameters, FLOPs/token and latency of LMs"),
    "shrink": ("sprune.bin.lm_shrink", "shrink a structured or low-rank pruned LM"),
    "results": ("sprune.bin.lm_results", "RESULTS.md, CSV and plots of an LM pruning study"),
    "import": ("sprune.bin.lm_import", "convert an espnet2 TransformerLM checkpoint to sprune"),
    "export": ("sprune.bin.lm_export", "convert a sprune LM to an espnet2 TransformerLM"),
    "ngram": ("sprune.bin.lm_ngram", "a token n-gram of transcripts, for LODR in decoding"),
    "arpa": ("sprune.bin.lm_arpa", "a word n-gram ARPA file of transcripts, for CTC decoding"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    lines = "\n".join(f"  {name:8s} {text}" for name, (_, text) in LM_COMMANDS.items())
    parser.epilog = f"commands:\n{lines}"
    parser.add_argument("lm_command", metavar="<command>", choices=list(LM_COMMANDS),
                        help="one of: " + ", ".join(LM_COMMANDS))
    parser.add_argument("lm_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int | None:
    from sprune.cli import OneLineParser

    module_name, help_text = LM_COMMANDS[args.lm_command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise UserError(f"`sprune lm {args.lm_command}` is not available in this "
                            "build") from None
        raise
    parser = OneLineParser(prog=f"sprune lm {args.lm_command}",
                           description=module.__doc__ or help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return module.run(parser.parse_args(args.lm_args))
