"""Collect an LM pruning experiment into RESULTS.md, results.csv and PNG plots.

  sprune lm results exp/mini
  sprune lm results exp/mini --out exp/mini/RESULTS.md --title "KJV: LM pruning" \\
      --note "Corpus: the King James Bible ..."

EXP_DIR holds one folder per run with the outcome.json of `sprune lm train` (dense, scratch
baselines) or `sprune lm prune`, and the eval_<text>.json that `sprune lm eval --text
<text>.txt` wrote into the LM it measured (shrunk/ or final/). RESULTS.md gets the table of
every run (method, criterion, schedule, target, parameters, FLOPs/token, ms/token, dev and
test perplexity) and paper 002's three questions answered from those numbers: incremental
vs one-shot, Taylor (any data-driven criterion) vs magnitude, pruned vs same-size from
scratch, each with the pairs it compares and the sign it finds. results.csv and
ppl_vs_{params,flops,latency}.png go beside RESULTS.md. See sprune.lm.report.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dir", type=Path, metavar="EXP_DIR",
                        help="experiment folder: one sub-folder per run (outcome.json)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="RESULTS.md to write; results.csv and the PNGs go beside it "
                             "(default: EXP_DIR/RESULTS.md)")
    parser.add_argument("--text", default="test", metavar="NAME",
                        help="which eval_<NAME>.json holds the test perplexity (default: "
                             "%(default)s, from `sprune lm eval --text .../test.txt`)")
    parser.add_argument("--title", help="title of RESULTS.md (default: the folder name)")
    parser.add_argument("--note", default="",
                        help="a paragraph under the title (corpus, configs, ...)")
    parser.add_argument("--quiet", action="store_true", help="do not print RESULTS.md")


def run(args: argparse.Namespace) -> int:
    from sprune.lm.report import write_lm_results

    path = write_lm_results(args.exp_dir, args.out, args.text, args.title, args.note)
    if not args.quiet:
        print(path.read_text(encoding="utf-8"), end="")
    print(f"wrote {path}, {path.parent / 'results.csv'} and the plots beside them")
    return 0
