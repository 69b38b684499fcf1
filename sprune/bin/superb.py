"""SUPERB around s3prl: export a (pruned) upstream, print the s3prl task commands, collect.

  sprune superb export --upstream exp/l0/shrunk --out exp/l0/s3prl
      copies the upstream dir to OUT/upstream, loads it as s3prl upstream 'sprune' through
      S3PRLUpstream + Featurizer (the learned weighted sum of layers) on random audio and
      writes OUT/export.json (layers, sizes, downsample rate, featurizer output shape)
  sprune superb check
      checks that s3prl's SUPERB problem classes import (s3prl 0.4.18 needs packages the
      venv lacks, e.g. pandas and tensorboard; the error names them)
  sprune superb command --task ASR --upstream DIR --root /data/LibriSpeech --out DIR
      prints the s3prl command line of one SUPERB task (frozen upstream, weighted sum)
  sprune superb collect --row dense=exp/superb/dense --row pruned=exp/superb/pruned \\
      --references conf/superb_reference.yaml --out exp/superb
      reads every <row dir>/<TASK>/evaluate/*/*/result.yaml that s3prl wrote and writes
      OUT/RESULTS.md (a table like paper 004's Table 1 with the SUPERB score of Eq. 6) and
      OUT/results.csv; --params NAME=UPSTREAM_DIR adds a parameter column.
"""
from __future__ import annotations

import argparse

HELP = "SUPERB via s3prl: export an upstream, s3prl task commands, Table-1 collection"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sprune.superb.s3prl_tasks import PROBLEMS

    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    export = sub.add_parser("export", help="copy an upstream dir and load it through s3prl")
    export.add_argument("--upstream", required=True, help="sprune upstream dir (shrunk)")
    export.add_argument("--out", required=True, help="export folder")
    sub.add_parser("check", help="check that s3prl's SUPERB problem classes import")
    command = sub.add_parser("command", help="print the s3prl command of one SUPERB task")
    command.add_argument("--task", required=True, choices=sorted(PROBLEMS))
    command.add_argument("--upstream", required=True, help="sprune upstream dir")
    command.add_argument("--root", required=True, help="the task's dataset root")
    command.add_argument("--out", required=True, help="s3prl target_dir of the task")
    command.add_argument("--config", help="s3prl YAML overriding the task's default config")
    finished = sub.add_parser("finished", help="exit 0 when a task's s3prl run has its test "
                                               "result, 1 when it has none yet")
    finished.add_argument("--task", required=True, choices=sorted(PROBLEMS))
    finished.add_argument("--out", required=True, help="s3prl target_dir of the task")
    collect = sub.add_parser("collect", help="Table 1 with the SUPERB score from s3prl results")
    collect.add_argument("--row", action="append", required=True, metavar="NAME=DIR",
                         help="an upstream's SUPERB folder holding <TASK>/ runs (repeatable)")
    collect.add_argument("--params", action="append", default=[], metavar="NAME=UPSTREAM",
                         help="count the parameters of a row's upstream dir")
    collect.add_argument("--references", required=True, help="FBANK / SOTA values YAML")
    collect.add_argument("--out", required=True, help="folder for RESULTS.md and results.csv")
    for sub_parser in (export, command, collect):
        sub_parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _pairs(values: list[str], option: str) -> dict[str, str]:
    from sprune.cli import split_named

    return dict(split_named(value, option) for value in values)


def run(args: argparse.Namespace) -> int:
    return {"export": _export, "command": _command, "collect": _collect,
            "check": _check, "finished": _finished}[args.action](args)


def _finished(args: argparse.Namespace) -> int:
    """0: the task has the one test result `collect` reads (printed); 1: no result yet. A
    result `collect` would refuse (several, or without the task's metric) is a UserError."""
    from sprune.superb.s3prl_tasks import task_result_or_none

    metrics = task_result_or_none(args.task, args.out)
    if metrics is None:
        print(f"{args.out}: {args.task} has no test result yet")
        return 1
    print(f"{args.out}: {args.task} finished: "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return 0


def _check(args: argparse.Namespace) -> int:
    from sprune.superb.s3prl_tasks import check_problems

    check_problems()
    print("s3prl's SUPERB problem classes import")
    return 0


def _export(args: argparse.Namespace) -> int:
    import json
    import shutil
    from pathlib import Path

    from sprune.errors import UserError
    from sprune.io import atomic_dir, atomic_write_text
    from sprune.superb.s3prl_tasks import check_export
    from sprune.upstream import load_upstream

    source, out = Path(args.upstream), Path(args.out)
    load_upstream(str(source))   # a clear UserError when it is not an upstream
    if not (source / "config.json").is_file():
        raise UserError(f"{source}: export takes a sprune upstream dir (config.json + "
                        "model.safetensors), e.g. the output of `sprune shrink`")
    with atomic_dir(out / "upstream") as tmp:
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(source / name, tmp / name)
    report = check_export(out / "upstream")
    atomic_write_text(out / "export.json", json.dumps(report, indent=1) + "\n")
    print(f"{out / 'upstream'}: loads as s3prl upstream 'sprune': {report['num_layers']} hidden "
          f"states of size {report['hidden_sizes']}, downsample {report['downsample_rate']}, "
          f"{report['parameters']:,} parameters; Featurizer output {report['featurizer_output']}")
    return 0


def _command(args: argparse.Namespace) -> int:
    import shlex

    from sprune.superb.s3prl_tasks import PROBLEMS

    words = ["python", "-m", "sprune.upstream.s3prl_bridge", "s3prl.main", PROBLEMS[args.task],
             "--target_dir", args.out, "--prepare_data.dataset_root", args.root,
             "--build_upstream.name", "sprune", "--build_upstream.path_or_url", args.upstream]
    if args.config:
        words += ["--config", args.config]
    print(shlex.join(words))
    return 0


def _collect(args: argparse.Namespace) -> int:
    import csv
    import io
    from pathlib import Path

    from sprune.io import atomic_write_text
    from sprune.superb.s3prl_tasks import collect_results
    from sprune.superb.score import format_table, load_references, superb_score
    from sprune.upstream import load_upstream

    references = load_references(args.references)
    rows = {name: collect_results(path) for name, path in _pairs(args.row, "--row").items()}
    params = {name: load_upstream(path)[0].num_parameters()
              for name, path in _pairs(args.params, "--params").items()}
    table = format_table(rows, references, params or None)
    out = Path(args.out)
    text = ("# SUPERB (frozen upstream, learned weighted sum of layers; s3prl problem "
            "defaults)\n\n" + table + f"\nsuperb_s: paper 004, Eq. 6, with the reference "
            f"values of {args.references}; averaged over the tasks listed per row.\n")
    atomic_write_text(out / "RESULTS.md", text)
    buffer = io.StringIO()
    metrics = [m for m in references if any(m in row for row in rows.values())]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["upstream", "params", *metrics, "superb_s"])
    for name, row in rows.items():
        writer.writerow([name, params.get(name, ""), *[row.get(m, "") for m in metrics],
                         f"{superb_score(row, references):.2f}" if row else ""])
    atomic_write_text(out / "results.csv", buffer.getvalue())
    print(text, end="")
    return 0
