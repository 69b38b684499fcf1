"""Fine-tune a task model with a pruning method (or dense) into one run folder.

Examples (from a recipe folder):

  sprune prune --config conf/finetune.yaml --method dense \\
      --train data/train --dev data/dev --out exp/ic/dense
  sprune prune --config conf/finetune.yaml --method conf/prune_parp.yaml --sparsity 0.7 \\
      --train data/train --dev data/dev --out exp/ic/parp_s0.70
  sprune prune ... --method conf/prune_omp.yaml --dense exp/ic/dense --no-retrain  # mask only
  sprune prune --config conf/finetune_nl.yaml --method conf/prune_omp.yaml --sparsity 0.5 \
      --mask-from exp/asr_fr/omp_s0.5 ... --out exp/transfer/omp_s0.5_fr2nl   # mask transfer
  sprune prune ... --out exp/asr/rp_s0.5 --test data/test   # + eval_test.json at the end

The task config's `task:` (intent | ctc | transducer) picks the experiment (see sprune.experiment).
`--mask-from` (or `mask_from:` in the pruning YAML) takes the mask of another run (its folder,
its mask/ folder or a mask file) instead of computing one: rp/mpi/omp fine-tune that
subnetwork, parp/parp-p start from it; experiment.json records where it came from.

Finished fine-tuning runs inside the folder are reused and a killed run resumes where its
last checkpoint left it (`--restart` deletes the folder and starts over). The folder gets
experiment.json, prune.json, mask/, final/ and outcome.json (see sprune.prune.methods.base).
Every input (config, data dirs, --init-from, --dense, a --mask-from mask against the model) is
checked before the folder is created or anything in it is touched, so a bad one leaves no
half-made run behind.
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sprune.config import load_config
from sprune.errors import UserError
from sprune.io import atomic_write_text, read_json_object
from sprune.prune.mask import MASK_FILE
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
    parser.add_argument("--init-from", metavar="RUN",
                        help="start from this finished run's final weights instead of the "
                             "pretrained upstream and a fresh head (same task and units; the "
                             "methods rewind to these weights), e.g. a dense multilingual model")
    parser.add_argument("--sparsity", type=float, help="target sparsity (overrides the YAML)")
    parser.add_argument("--mask-from", metavar="RUN_OR_MASK",
                        help="take the mask of another run (run folder, mask/ folder or mask "
                             "file) instead of computing it (overrides mask_from in the YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a task-config key, e.g. train.lr=1e-4")
    parser.add_argument("--no-retrain", action="store_true",
                        help="stop once the mask is found (RP/MPI/OMP/IMP); run again without "
                             "this flag to fine-tune the subnetwork")
    parser.add_argument("--restart", action="store_true", help="delete --out and start over")
    parser.add_argument("--test", dest="tests", action="append", default=[], metavar="DATA_DIR",
                        help="once the run has finished, evaluate it on this data dir as "
                             "`sprune evaluate` does (eval_<dir name>.json; repeatable; skipped "
                             "when that file is newer than outcome.json)")


def load_prune_config(spec: str, sparsity: float | None, mask_from: str | None = None
                      ) -> PruneConfig:
    if spec in METHODS:
        config = PruneConfig(method=spec)
    elif spec.endswith((".yaml", ".yml")) or Path(spec).exists():
        config = load_config(PruneConfig, spec)
    else:
        raise UserError(f"--method '{spec}' is neither a YAML file nor a method name; known "
                        f"methods: {', '.join(METHODS)}")
    if sparsity is not None:
        config = replace(config, sparsity=sparsity)
    if mask_from is not None:
        config = replace(config, mask_from=mask_from)
    return config


def resolve_mask_source(spec: str) -> tuple[str, dict[str, Any]]:
    """(absolute mask path, what experiment.json records as `mask_source`) for a run folder,
    a mask folder or a mask file. The source run is the nearest folder above the mask that
    holds experiment.json."""
    from sprune.experiment import EXPERIMENT_FILE

    path = Path(spec).resolve()
    mask = path / "mask" if (path / "mask" / MASK_FILE).is_file() else path
    if not (mask.is_file() or (mask / MASK_FILE).is_file()):
        raise UserError(f"--mask-from {spec}: no mask there; give a finished run folder, its "
                        "mask/ folder or a mask .safetensors file")
    source: dict[str, Any] = {"mask": str(mask), "run": None, "method": None,
                              "sparsity": None, "train_langs": []}
    for folder in (mask.parent, mask.parent.parent):
        if (folder / EXPERIMENT_FILE).is_file():
            doc = read_json_object(folder / EXPERIMENT_FILE)
            source["run"] = str(folder)
            source["train_langs"] = list(doc.get("data", {}).get("train_langs", []))
            if (folder / "prune.json").is_file():
                prune = read_json_object(folder / "prune.json")
                source["method"], source["sparsity"] = prune.get("method"), prune.get("sparsity")
            break
    return str(mask), source


def run(args: argparse.Namespace) -> int:
    from sprune.experiment import experiment_for_training, load_experiment_config

    config = load_experiment_config(args.config, args.overrides)
    upstream = args.upstream or config.upstream
    if not upstream:
        raise UserError(f"{args.config}: no upstream: set `upstream:` or pass --upstream")
    prune_config = load_prune_config(args.method, args.sparsity, args.mask_from)
    mask_source = None
    if prune_config.mask_from is not None:
        mask_path, mask_source = resolve_mask_source(prune_config.mask_from)
        prune_config = replace(prune_config, mask_from=mask_path)
    method = make_method(prune_config)
    check_tests(args.tests)
    out = Path(args.out)
    if not args.restart and (out / "outcome.json").is_file():
        todo = [d for d in args.tests if not evaluated(out, d)]
        print(f"{out}: finished before (outcome.json); "
              + ("nothing to do" if not todo else f"evaluating it on {', '.join(todo)}"))
        evaluate_tests(out, todo)
        return 0
    init_from = None
    if args.init_from is not None:
        init_from = Path(args.init_from)
        if not (init_from / "final").is_dir():
            raise UserError(f"--init-from {init_from}: no final/ weights there; give a "
                            "finished run folder")
    experiment = experiment_for_training(config, upstream, args.train, args.dev)
    if init_from is not None:
        experiment.init_from = init_from
        experiment.metadata["init_from"] = str(init_from.resolve())
    if mask_source is not None:
        experiment.metadata["mask_source"] = mask_source
    dense = Path(args.dense) if args.dense else None
    context = experiment.context(dense)
    # Every input is checked before the run folder is touched: a bad one leaves no
    # half-made run behind (and --restart deletes nothing). The model built here tests the
    # --init-from weights, the scope and a --mask-from mask against the task model.
    method.check_inputs(experiment.initial_model(), context)
    if args.restart and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    experiment.save(out)
    atomic_write_text(out / "prune.json", json.dumps(asdict(prune_config), indent=1) + "\n")
    outcome = method.run(context, out, retrain=not args.no_retrain)
    if outcome is None:
        print(f"{out}: mask found ({method.name}); run again without --no-retrain to fine-tune")
        return 0
    dev = ", ".join(f"{k} {v:.4f}" for k, v in outcome.dev.items() if "/" not in k)
    print(f"{out}: {method.name} sparsity {outcome.achieved_sparsity:.4f} "
          f"(target {outcome.target_sparsity}), dev {dev}, passes {outcome.passes:.2f}")
    evaluate_tests(out, args.tests, experiment)
    return 0


def check_tests(tests: list[str]) -> None:
    """--test data dirs exist and have distinct names (checked before any training)."""
    names: dict[str, str] = {}
    for data in tests:
        if not Path(data).is_dir():
            raise UserError(f"--test {data}: no such data dir")
        name = Path(data).name
        if name in names:
            raise UserError(f"--test {names[name]} and {data} would both write eval_{name}.json; "
                            "evaluate one of them with `sprune evaluate --name`")
        names[name] = data


def evaluated(run_dir: Path, data: str) -> bool:
    """Whether eval_<data dir name>.json of `run_dir` is newer than its outcome.json."""
    result = run_dir / f"eval_{Path(data).name}.json"
    return result.is_file() and result.stat().st_mtime > (run_dir / "outcome.json").stat().st_mtime


def evaluate_tests(run_dir: Path, tests: list[str], experiment: Any = None) -> None:
    """--test: evaluate the finished run on each data dir (one process for training and
    decoding saves the recipes a start-up of torch per run)."""
    from sprune.bin.evaluate import evaluate_run
    from sprune.experiment import load_experiment

    if tests and experiment is None:
        experiment = load_experiment(run_dir)
    for data in tests:
        evaluate_run(run_dir, data, experiment=experiment)
