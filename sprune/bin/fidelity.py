"""The papers' claims checked against a recipe's measured results.csv: paper 000's winning
tickets vs dense, paper 001's PARP vs OMP / IMP and PARP's mask vs MPI's, each marked
reproduced / not reproduced by a stated rule, with the numbers (see sprune.fidelity).

  sprune fidelity egs/mini_minds/ic1/exp/finetune/results.csv
  sprune fidelity egs/mini_minds/asr1/exp/results.csv --out FIDELITY.md
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS_CSV",
                        help="results.csv of an experiment (`sprune results`, or `sprune "
                             "analyze --report`); several are checked one after the other")
    parser.add_argument("--iou-threshold", type=float, default=0.9, metavar="X",
                        help="IOU of PARP's and MPI's masks that counts as close (default 0.9; "
                             "paper 001 reports above 0.9999 from 20 %% sparsity on)")
    parser.add_argument("--out", metavar="FILE", help="also write the markdown table here")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sprune.errors import UserError
    from sprune.fidelity import check, markdown, read_results
    from sprune.io import atomic_write_text

    if not 0.0 < args.iou_threshold <= 1.0:
        raise UserError(f"--iou-threshold {args.iou_threshold}: give a fraction in (0, 1]")
    verdicts = []
    for path in args.results:
        found = check(read_results(path), args.iou_threshold)
        if not found:
            raise UserError(f"{path}: no setting with PARP or IMP runs; run the recipe's "
                            "pruning stages with --methods including parp or imp")
        verdicts += found
    text = markdown(verdicts)
    if args.out:
        atomic_write_text(Path(args.out), text)
    print(text, end="")
    return 0
