"""Collect the finished runs of an experiment folder into RESULTS.md, results.csv and a PNG
of the metric against sparsity per method.

  sprune results exp/mini_ic --metric accuracy
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dir", help="experiment folder holding one sub-folder per run")
    parser.add_argument("--metric", default="accuracy", help="metric to tabulate (default accuracy)")
    parser.add_argument("--title", help="title of RESULTS.md (default: the folder name)")


def run(args: argparse.Namespace) -> int:
    from sprune.report import write_results

    path = write_results(args.exp_dir, args.metric, args.title)
    print(path.read_text())
    return 0
