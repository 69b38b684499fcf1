"""Study outputs of paper 001 from an experiment folder: pruning curves, mask IOU matrices,
cross-lingual mask transfer grids and PARP's final-vs-initial mask IOU.

  sprune analyze exp/mini_asr                         # everything, into exp/mini_asr/analysis
  sprune analyze exp/h2l --metric per --iou-sparsity 0.5 --iou-sparsity 0.9

Run folders are found at any depth by their prune.json (written by `sprune prune`); their
experiment.json says which languages they were fine-tuned on (data.train_langs) and, for
runs made with --mask-from, which languages the mask came from. Writes ANALYSIS.md with
every table, plus CSV files and PNG plots:

  curves.csv, curves_<setting>.png      (a) error vs sparsity per method, dense as a line,
                                            and the fine-tuning passes of every run
  joint.csv                             (a) joint multilingual run vs per-language runs
  iou_<method>_s<S>.csv / .png          (b) IOU of masks across settings + MPI and RP rows
  transfer_<method>_s<S>.csv / .png     (c) relative error change of mask transfer
  parp_initial_iou.csv / .png           (e) IOU of PARP's final and initial masks
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dir", help="experiment folder holding the run folders")
    parser.add_argument("--out", help="folder to write (default: EXP_DIR/analysis)")
    parser.add_argument("--metric", help="metric of the curves and transfer grids, e.g. per, "
                                         "wer, cer, accuracy (default: the first of accuracy, "
                                         "per, wer, cer the runs report)")
    parser.add_argument("--split", help="evaluation split, e.g. test (default: test when "
                                        "the runs were evaluated on it, else dev)")
    parser.add_argument("--iou-method", default="omp",
                        help="method whose masks the IOU matrix compares (default omp)")
    parser.add_argument("--iou-sparsity", type=float, action="append", metavar="S",
                        help="sparsity of an IOU matrix, repeatable (default: every sparsity "
                             "with such masks)")
    parser.add_argument("--title", help="title of ANALYSIS.md (default: the folder name)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--lower-is-better", dest="lower", action="store_const", const=True,
                           help="the metric is an error (default: inferred from its name)")
    direction.add_argument("--higher-is-better", dest="lower", action="store_const",
                           const=False, help="the metric is a score like accuracy")


def run(args: argparse.Namespace) -> int:
    from sprune.analysis import write_analysis

    path = write_analysis(args.exp_dir, args.out, args.metric, args.split, args.iou_method,
                          args.iou_sparsity, args.lower, args.title)
    print(f"wrote {path}")
    return 0
