"""Frozen-upstream intent classification and CTC ASR for several upstreams, side by side.

Each upstream runs once over --train, --dev and --test (frozen: no gradients); small heads
on a learned weighted sum of all its hidden states (as SUPERB) are trained from the same seed:
intent (mean pooling + linear; accuracy) and ctc (2 conv layers + CTC over characters;
WER, CER).
--upstream NAME=SPEC takes any upstream spec; --masked NAME=DIR takes a structured-pruning
masks dir (or run folder) and evaluates the full-size student under its deterministic 0/1
masks. --same A,B checks that two rows are the same model: the largest difference of their
hidden states on --test (must be <= 1e-4) and whether their metrics are identical.

example (egs/mini_minds/superb1, stage 4):
  sprune downstream --upstream dense=../../../sprune/resources/upstream/tiny_hubert_en \\
      --masked masked=exp/l0/prune --upstream shrunk=exp/l0/shrunk --same masked,shrunk \\
      --train data/en/train --dev data/en/dev --test data/en/test --out exp/l0/downstream

Writes OUT/downstream.json (one object per upstream: parameters, sparsity, metrics, layer
weights; and the checks) and OUT/downstream.md (the table); exits 1 when a --same check fails.
"""
from __future__ import annotations

import argparse

HELP = "frozen-upstream intent and CTC heads on a weighted layer sum, for several upstreams"
TASKS = ("intent", "ctc")
SAME_TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # One list for both options keeps the rows in command-line order.
    parser.add_argument("--upstream", action="append", dest="rows", default=[],
                        type=lambda v: ("upstream", v), metavar="NAME=SPEC",
                        help="an upstream to evaluate (repeatable; rows in order)")
    parser.add_argument("--masked", action="append", dest="rows",
                        type=lambda v: ("masked", v), metavar="NAME=DIR",
                        help="a masks dir or structured-pruning run folder, evaluated masked")
    parser.add_argument("--train", required=True, help="data dir the heads train on")
    parser.add_argument("--dev", required=True, help="data dir that picks the epoch")
    parser.add_argument("--test", required=True, help="data dir of the reported numbers")
    parser.add_argument("--out", required=True, help="output dir")
    parser.add_argument("--tasks", default="intent,ctc", help="comma-separated subset of "
                        f"{', '.join(TASKS)} (default: %(default)s)")
    parser.add_argument("--same", action="append", default=[], metavar="A,B",
                        help="check that rows A and B compute the same hidden states")
    parser.add_argument("--intent-epochs", type=int, default=100, metavar="N",
                        help="epochs of the intent head (default: %(default)s)")
    parser.add_argument("--ctc-epochs", type=int, default=25, metavar="N",
                        help="epochs of the CTC head (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every head")
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64",
                        help="dtype of the upstream forward (features are stored in float32; "
                        "float64 makes equal models give bit-equal features; default: "
                        "%(default)s)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch (default 0: torch's choice)")


def _named(values: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(kind, "NAME=PATH") pairs -> (name, path, kind) rows."""
    from sprune.cli import split_named

    return [(*split_named(value, f"--{kind}"), kind) for kind, value in values]


def _parse(args: argparse.Namespace) -> tuple[list[tuple[str, str, str]], list[str],
                                               list[tuple[str, str]]]:
    from sprune.errors import UserError

    rows = _named(args.rows)
    if not rows:
        raise UserError("nothing to evaluate: give --upstream NAME=SPEC and/or --masked NAME=DIR")
    names = [name for name, _, _ in rows]
    if len(set(names)) != len(names):
        raise UserError(f"row names must be unique; got {', '.join(names)}")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or any(t not in TASKS for t in tasks):
        raise UserError(f"--tasks '{args.tasks}': choose from {', '.join(TASKS)}")
    same = []
    for pair in args.same:
        a, _, b = pair.partition(",")
        if a not in names or b not in names:
            raise UserError(f"--same '{pair}': name two rows of {', '.join(names)}")
        same.append((a, b))
    if min(args.intent_epochs, args.ctc_epochs) < 1 or args.threads < 0:
        raise UserError("--intent-epochs and --ctc-epochs must be positive, --threads >= 0")
    return rows, tasks, same


def _load(spec: str, kind: str):
    """(eval-mode callable upstream, parameters it keeps, scope sparsity or None)."""
    from pathlib import Path

    from sprune.structured.mask_store import load_masks, resolve_masks_dir
    from sprune.structured.sparsity import ParameterBudget, parameter_count
    from sprune.upstream import load_upstream

    if kind == "upstream":
        model, _ = load_upstream(spec)
        return model.eval(), model.num_parameters(), None
    path = Path(spec)
    directory = (resolve_masks_dir(run=path) if not (path / "masks.json").is_file()
                 else resolve_masks_dir(masks=path))
    masked, _ = load_masks(directory)
    masks = masked.eval_masks()
    budget = ParameterBudget(masked.config, masked.structures)
    kept = int(round(float(parameter_count(masked.config, masks).total)))
    return masked.eval(), kept, budget.sparsity_of(masks)


def format_table(rows: list[dict]) -> str:
    def pct(row: dict, key: str) -> str:
        return f"{100 * row[key]:.1f}" if key in row else "-"

    lines = ["| upstream | params | params kept | scope sparsity | intent dev acc % | "
             "intent test acc % | CTC test CER % | CTC test WER % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    first = rows[0]["num_parameters"]
    for row in rows:
        sparsity = "-" if row["scope_sparsity"] is None else f"{row['scope_sparsity']:.3f}"
        lines.append(f"| {row['name']} | {row['num_parameters']:,} | "
                     f"{row['num_parameters'] / first:.3f} | {sparsity} | "
                     f"{pct(row, 'intent_dev_acc')} | {pct(row, 'intent_test_acc')} | "
                     f"{pct(row, 'ctc_test_cer')} | {pct(row, 'ctc_test_wer')} |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("name", "kind", "num_parameters", "scope_sparsity", "intent_dev_acc",
               "intent_test_acc", "ctc_dev_cer", "ctc_test_cer", "ctc_test_wer")


def format_csv(rows: list[dict]) -> str:
    """One line per upstream, the columns of `CSV_COLUMNS` (empty where not measured)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from sprune.data.datadir import DataDir
    from sprune.data.dataset import AudioDataset
    from sprune.data.tokenizer import build_tokenizer
    from sprune.errors import UserError
    from sprune.io import atomic_write_text
    from dataclasses import replace

    from sprune.superb.frozen import (CTC_HEAD, INTENT_HEAD, extract_features,
                                      max_difference, train_ctc, train_intent)

    rows_spec, tasks, same = _parse(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = {split: DataDir.load(getattr(args, split)) for split in ("train", "dev", "test")}
    for split, d in data.items():
        if len(d) == 0:
            raise UserError(f"{getattr(args, split)}: the data dir is empty")
        if "intent" in tasks and d.utt2intent is None:
            raise UserError(f"{getattr(args, split)}/utt2intent is missing (--tasks intent)")
        if "ctc" in tasks and d.text is None:
            raise UserError(f"{getattr(args, split)}/text is missing (--tasks ctc)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    # every row loads once before any head trains: a bad spec fails now, not after the rows
    # before it have been trained (nothing is written until all rows are done)
    for name, spec, kind in rows_spec:
        _load(spec, kind)
    sets = {split: AudioDataset(d, preload=True) for split, d in data.items()}
    tokenizer = build_tokenizer("char", data["train"].text.values()) if "ctc" in tasks else None
    rows, test_features = [], {}
    for name, spec, kind in rows_spec:
        start = time.time()
        upstream, kept, sparsity = _load(spec, kind)
        upstream.to(getattr(torch, args.precision))
        features = {split: extract_features(upstream, ds) for split, ds in sets.items()}
        row = {"name": name, "spec": spec, "kind": kind, "num_parameters": kept,
               "scope_sparsity": sparsity}
        if "intent" in tasks:
            row.update(train_intent(features["train"], features["dev"], features["test"],
                                    replace(INTENT_HEAD, epochs=args.intent_epochs,
                                            seed=args.seed)))
        if "ctc" in tasks:
            row.update(train_ctc(features["train"], features["dev"], features["test"],
                                 tokenizer, replace(CTC_HEAD, epochs=args.ctc_epochs,
                                                    seed=args.seed)))
        row["seconds"] = round(time.time() - start, 1)
        rows.append(row)
        if any(name in pair for pair in same):   # the check runs the float32 model
            test_features[name] = extract_features(upstream.float(), sets["test"])
        del features
        print(f"sprune downstream: {name}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items()
            if k.startswith(("intent_", "ctc_")) and isinstance(v, float)), flush=True)
    checks, check_lines, failed = [], [], False
    by_name = {row["name"]: row for row in rows}
    for a, b in same:
        diff = max_difference(test_features[a], test_features[b])
        keys = [k for k in by_name[a] if k.endswith(("_acc", "_cer", "_wer"))]
        identical = all(by_name[a][k] == by_name[b].get(k) for k in keys)
        ok = diff <= SAME_TOLERANCE
        failed |= not ok
        checks.append({"a": a, "b": b, "max_hidden_difference": diff, "tolerance": SAME_TOLERANCE,
                       "ok": ok, "identical_metrics": identical})
        check_lines.append(
            f"check: {a} vs {b}: max |hidden state difference| on test (float32) {diff:.2e} "
            f"({'<=' if ok else '>'} {SAME_TOLERANCE:g}: {'OK' if ok else 'FAILED'}); "
            f"metrics identical: {'yes' if identical else 'no'}")
        print(check_lines[-1], flush=True)
    atomic_write_text(out / "downstream.json",
                      json.dumps({"rows": rows, "checks": checks,
                                  "data": {s: str(getattr(args, s)) for s in data}},
                                 indent=1) + "\n")
    table = format_table(rows)
    atomic_write_text(out / "downstream.md", table)
    atomic_write_text(out / "downstream.csv", format_csv(rows))
    atomic_write_text(out / "checks.md", "".join(f"- {line}\n" for line in check_lines))
    print(table, end="")
    return 1 if failed else 0
