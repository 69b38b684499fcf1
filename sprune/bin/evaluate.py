"""Evaluate a finished run folder (written by `sprune prune`) on a data dir.

  sprune evaluate exp/ic/parp_s0.70 --data data/test --name test

Writes <run>/eval_<name>.json with overall and per-language metrics.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sprune.errors import UserError
from sprune.io import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder with experiment.json and final/")
    parser.add_argument("--data", required=True, help="data dir to evaluate on")
    parser.add_argument("--name", help="name of the result (default: the data dir's name)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")


def run(args: argparse.Namespace) -> int:
    from sprune.experiment import IntentExperiment
    from sprune.prune.methods.base import load_model_state
    from sprune.train import resolve_device

    run_dir = Path(args.run_dir)
    if not (run_dir / "final").is_dir():
        raise UserError(f"{run_dir}/final is missing; the run has not finished "
                        "(run `sprune prune` for it first)")
    experiment = IntentExperiment.from_folder(run_dir)
    dataset = experiment.dataset(args.data)
    if len(dataset) == 0:
        raise UserError(f"{args.data}: no utterances to evaluate")
    model = experiment.build_model()
    load_model_state(model, run_dir / "final")
    model.to(resolve_device(args.device))
    with torch.no_grad():
        metrics = experiment.evaluate(model, dataset)
    name = args.name or Path(args.data).name
    atomic_write_text(run_dir / f"eval_{name}.json", json.dumps(metrics, indent=1) + "\n")
    print(f"{run_dir} on {args.data}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0
