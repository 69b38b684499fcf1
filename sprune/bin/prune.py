"""Fine-tune a task model with a pruning method (or dense) into one run folder.

Examples (from a recipe folder):

  sprune prune --config conf/finetune.yaml --method dense \\
      --train data/train --dev data/dev --out exp/ic/dense
  sprune prune --config conf/finetune.yaml --method conf/prune_parp.yaml --sparsity 0.7 \\
      --train data/train --dev data/dev --out exp/ic/parp_s0.70
  sprune prune ... --method conf/prune_omp.yaml --dense exp/ic/dense --no-retrain  # mask only

Finished fine-tuning runs inside the folder are reused and a killed run resumes where its
last checkpoint left it (`--restart` deletes the folder first). The folder gets
experiment.json, prune.json, mask/, final/ and outcome.json (see sprune.prune.methods.base).
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

from sprune.config import load_config
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.prune.methods import METHODS, PruneConfig, make_method


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="task config YAML (conf/finetune.yaml)")
    parser.add_argument("--method", required=True,
                        help=f"pruning config YAML (conf/prune_<method>.yaml) or a method name "
                             f"({', '.join(METHODS)}) with default settings")
    parser.add_argument("--train", required=True, help="training data dir")
    parser.add_argument("--dev", required=True, help="dev data dir (evaluation during training)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--upstream", help="upstream spec (overrides `upstream:` in --config)")
    parser.add_argument("--dense", help="finished dense run folder (OMP prunes its weights)")
    parser.add_argument("--sparsity", type=float, help="target sparsity (overrides the YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a task-config key, e.g. train.lr=1e-4")
    parser.add_argument("--no-retrain", action="store_true",
                        help="stop once the mask is found (RP/MPI/OMP/IMP); run again without "
                             "this flag to fine-tune the subnetwork")
    parser.add_argument("--restart", action="store_true", help="delete --out and start over")


def load_prune_config(spec: str, sparsity: float | None) -> PruneConfig:
    if spec in METHODS:
        config = PruneConfig(method=spec)
    elif spec.endswith((".yaml", ".yml")) or Path(spec).exists():
        config = load_config(PruneConfig, spec)
    else:
        raise UserError(f"--method '{spec}' is neither a YAML file nor a method name; known "
                        f"methods: {', '.join(METHODS)}")
    return replace(config, sparsity=sparsity) if sparsity is not None else config


def run(args: argparse.Namespace) -> int:
    from sprune.experiment import IntentExperiment, load_experiment_config

    config = load_experiment_config(args.config, args.overrides)
    upstream = args.upstream or config.upstream
    if not upstream:
        raise UserError(f"{args.config}: no upstream: set `upstream:` or pass --upstream")
    prune_config = load_prune_config(args.method, args.sparsity)
    method = make_method(prune_config)
    out = Path(args.out)
    if args.restart and out.exists():
        shutil.rmtree(out)
    if (out / "outcome.json").is_file():
        print(f"{out}: finished before (outcome.json); nothing to do")
        return 0
    experiment = IntentExperiment.for_training(config, upstream, args.train, args.dev)
    out.mkdir(parents=True, exist_ok=True)
    experiment.save(out)
    atomic_write_text(out / "prune.json", json.dumps(asdict(prune_config), indent=1) + "\n")
    dense = Path(args.dense) if args.dense else None
    outcome = method.run(experiment.context(dense), out, retrain=not args.no_retrain)
    if outcome is None:
        print(f"{out}: mask found ({method.name}); run again without --no-retrain to fine-tune")
        return 0
    dev = ", ".join(f"{k} {v:.4f}" for k, v in outcome.dev.items() if "/" not in k)
    print(f"{out}: {method.name} sparsity {outcome.achieved_sparsity:.4f} "
          f"(target {outcome.target_sparsity}), dev {dev}, passes {outcome.passes:.2f}")
    return 0
