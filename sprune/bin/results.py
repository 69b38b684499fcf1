"""Collect the finished runs of an experiment folder into RESULTS.md, results.csv, runs.csv
and a PNG of the metric against sparsity per method (mean ± spread over the seeds of runs in
seed<N>/ folders; with one seed, the test-set noise floor says which differences are noise).

  sprune results exp/mini_ic --metric accuracy --test-data data/test
  sprune results exp/mini_asr --metric per          # error rates: lower is better
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dir", help="experiment folder holding one sub-folder per run")
    parser.add_argument("--metric", help="metric to tabulate: accuracy, wer, cer, per, or a "
                                         "per-language one like per/fr-FR (default: the first "
                                         "of accuracy, per, wer, cer the runs report)")
    parser.add_argument("--title", help="title of RESULTS.md (default: the folder name)")
    parser.add_argument("--test-data", metavar="DIR",
                        help="data dir the test scores come from: its utterance count sizes "
                             "the noise floor of a single seed (default: the folder named "
                             "after the split beside each run's dev dir, e.g. data/test)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--lower-is-better", dest="lower", action="store_const", const=True,
                           help="the metric is an error (default: inferred from its name: "
                                "wer, cer, per, loss, ppl are errors)")
    direction.add_argument("--higher-is-better", dest="lower", action="store_const",
                           const=False, help="the metric is a score like accuracy")


def run(args: argparse.Namespace) -> int:
    from sprune.report import write_results

    path = write_results(args.exp_dir, args.metric, args.title, args.lower,
                         args.test_data)
    print(path.read_text())
    return 0
