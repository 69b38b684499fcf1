"""Study outputs of paper 001 from an experiment folder: pruning curves, mask IOU matrices,
cross-lingual mask transfer grids and PARP's final-vs-initial mask IOU.

  sprune analyze exp/mini_asr                         # everything, into exp/mini_asr/analysis
  sprune analyze exp/h2l --metric per --iou-sparsity 0.5 --iou-sparsity 0.9
  sprune analyze exp/lsr exp/csr --report exp/RESULTS.md --title "Mini ASR study" \
      --note "Corpus: ..."             # each into its analysis/, plus one combined report

Run folders are found at any depth by their prune.json (written by `sprune prune`); their
experiment.json says which languages they were fine-tuned on (data.train_langs) and, for
runs made with --mask-from, which languages the mask came from. Writes ANALYSIS.md with
every table, plus CSV files and PNG plots:

  curves.csv, curves_<setting>.png      (a) error vs sparsity per method, dense as a line,
                                            and the fine-tuning passes of every run
  results.csv                           (a) every cell over seeds (runs in seed<N>/ folders):
                                            mean, std, min, max, "(n.s.)" marks, passes, PARP-
                                            vs-MPI mask IOU (with --report: also beside FILE)
  joint.csv                             (a) joint multilingual run vs per-language runs
  iou_<method>_s<S>.csv / .png          (b) IOU of masks across settings + MPI and RP rows
  transfer_<method>_s<S>.csv / .png     (c) relative error change of mask transfer
  parp_initial_iou.csv / .png           (e) IOU of PARP's final and initial masks
  pathways.csv, pathways_{iou,sharing}_<run>.png   (f) pathways runs: IOU between language
                                            pathways, weights used by 0..L languages
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dirs", nargs="+", metavar="EXP_DIR",
                        help="experiment folder holding the run folders (several with --report)")
    parser.add_argument("--out", help="folder to write (default: EXP_DIR/analysis; one "
                                      "EXP_DIR without --report only)")
    parser.add_argument("--report", metavar="FILE",
                        help="also write one markdown report of every EXP_DIR's analysis "
                             "(links relative to FILE's folder; --title is its title)")
    parser.add_argument("--note", default="", help="a paragraph under the --report title")
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
    parser.add_argument("--title", help="title of ANALYSIS.md or of the --report (default: the "
                                        "folder name)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--lower-is-better", dest="lower", action="store_const", const=True,
                           help="the metric is an error (default: inferred from its name)")
    direction.add_argument("--higher-is-better", dest="lower", action="store_const",
                           const=False, help="the metric is a score like accuracy")


def run(args: argparse.Namespace) -> int:
    from sprune.analysis import write_analysis, write_report
    from sprune.errors import UserError

    options = {"metric": args.metric, "split": args.split, "iou_method": args.iou_method,
               "iou_sparsities": args.iou_sparsity, "lower": args.lower}
    if args.report is None:
        if len(args.exp_dirs) > 1:
            raise UserError("several experiment folders are analysed into one --report FILE; "
                            "pass --report or one folder")
        path = write_analysis(args.exp_dirs[0], args.out, title=args.title, **options)
    else:
        if args.out is not None:
            raise UserError("--out names the analysis folder of one EXP_DIR; with --report each "
                            "goes to EXP_DIR/analysis")
        path = write_report(args.exp_dirs, args.report, args.title or Path(args.report).stem,
                            args.note, **options)
    print(f"wrote {path}")
    return 0
