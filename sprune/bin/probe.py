"""Linear probe of a frozen upstream on intents: pretrained vs random initialisation.

Each upstream runs once over --train, --dev and --test (no gradients); every hidden state is
mean-pooled per utterance, and one logistic regression per layer (full batch, L-BFGS, L2 chosen
on dev from --l2) is trained on --train. Reported: dev and test accuracy of the layer that is
best on dev, and of the last layer. --upstream SPEC probes the weights SPEC names;
--random-init SPEC probes the same architecture with random weights drawn from --seed. Both
may be given, and repeated: each adds one row to the comparison.

example (the ssl1 recipe's stage 3):
  sprune probe --upstream exp/pretrain/upstream --random-init exp/pretrain/upstream \\
      --train data/train --dev data/dev --test data/test --out exp/pretrain/probe

Writes OUT/probe.json (a list: one result per upstream, with per-layer accuracies) and
OUT/probe.md (the Markdown table).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "linear probe of frozen upstreams on intents (pretrained vs random init)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", action="append", default=[], metavar="SPEC",
                        help="upstream to probe with its weights (repeatable)")
    parser.add_argument("--random-init", action="append", default=[], metavar="SPEC",
                        help="probe SPEC's architecture with random weights (repeatable)")
    parser.add_argument("--train", required=True, help="data dir the probes are trained on")
    parser.add_argument("--dev", required=True, help="data dir that picks the layer and L2")
    parser.add_argument("--test", help="data dir for the reported test accuracy (optional)")
    parser.add_argument("--out", required=True, help="output dir for probe.json and probe.md")
    parser.add_argument("--seed", type=int, default=0, help="seed of random-init weights "
                        "(default: %(default)s)")
    parser.add_argument("--l2", default="0.0001,0.001,0.01,0.1", metavar="LIST",
                        help="L2 penalties tried per layer (default: %(default)s)")
    parser.add_argument("--max-iter", type=int, default=200, metavar="N",
                        help="L-BFGS iterations per probe (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="utterances per upstream forward (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch (default 0: torch's choice)")


def _l2_grid(text: str) -> list[float]:
    from sprune.errors import UserError

    try:
        grid = [float(v) for v in text.split(",")]
    except ValueError:
        grid = []
    if not grid or any(v < 0 for v in grid):
        raise UserError(f"--l2 '{text}' must be a comma-separated list of non-negative "
                        "numbers, e.g. 0.001,0.01")
    return grid


def run(args: argparse.Namespace) -> int:
    import torch

    from sprune.data.datadir import DataDir
    from sprune.data.dataset import AudioDataset
    from sprune.errors import UserError
    from sprune.io import atomic_write_text
    from sprune.ssl.probe import (format_table, intent_labels, pooled_layer_features,
                                  probe_layers, random_init_like)
    from sprune.upstream import load_upstream

    if not args.upstream and not args.random_init:
        raise UserError("nothing to probe: give --upstream SPEC and/or --random-init SPEC")
    if args.max_iter < 1 or args.batch_size < 1 or args.threads < 0:
        raise UserError("--max-iter and --batch-size must be positive and --threads >= 0")
    l2_grid = _l2_grid(args.l2)
    if args.threads:
        torch.set_num_threads(args.threads)

    train_dir = DataDir.load(args.train)
    if len(train_dir) == 0 or train_dir.utt2intent is None:
        raise UserError(f"{args.train}: the probe needs a non-empty data dir with utt2intent")
    intents = sorted(set(train_dir.utt2intent.values()))
    if len(intents) < 2:
        raise UserError(f"{args.train}/utt2intent has one intent only; a probe needs two or more")
    splits = {"train": AudioDataset(train_dir, intents),
              "dev": AudioDataset(DataDir.load(args.dev), intents)}
    if args.test:
        splits["test"] = AudioDataset(DataDir.load(args.test), intents)
    labels = {name: intent_labels(ds) for name, ds in splits.items()}
    counts = torch.bincount(labels["train"], minlength=len(intents))
    chance = float(counts.max()) / float(counts.sum())

    models = [(spec, "pretrained") for spec in args.upstream]
    models += [(spec, f"random (seed {args.seed})") for spec in args.random_init]
    rows = []
    for spec, init in models:
        upstream, config = load_upstream(spec)
        if init != "pretrained":
            upstream = random_init_like(config, args.seed)
        print(f"sprune probe: {init} {spec}: extracting features", flush=True)
        features = {name: pooled_layer_features(upstream, ds, args.batch_size)
                    for name, ds in splits.items()}
        test = (features["test"], labels["test"]) if args.test else None
        result = probe_layers((features["train"], labels["train"]),
                              (features["dev"], labels["dev"]), test, len(intents), l2_grid,
                              args.max_iter)
        row = {"upstream": spec, "init": init, "num_parameters": upstream.num_parameters(),
               "num_classes": len(intents), "chance": chance, "l2_grid": l2_grid,
               "data": {name: str(Path(getattr(args, name)).resolve()) for name in splits},
               **result.to_dict()}
        rows.append(row)
        best, last = result.best, result.last
        test_text = (f", test {100 * best.test:.1f} %" if best.test is not None else "")
        print(f"sprune probe: {init} {spec}: best layer {best.layer} dev {100 * best.dev:.1f} %"
              f"{test_text}; last layer dev {100 * last.dev:.1f} %", flush=True)
    out = Path(args.out)
    atomic_write_text(out / "probe.json", json.dumps(rows, indent=1) + "\n")
    table = format_table(rows)
    atomic_write_text(out / "probe.md", table)
    print(table, end="")
    return 0
