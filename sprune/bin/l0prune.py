"""Structured L0 pruning of an upstream by distillation (paper 004), task-agnostic.

The student (the upstream with hard-concrete gates on the structures of `structured:`) learns
to reproduce the frozen original's hidden states on the audio of --train (labels unused),
while a Lagrangian term drives the gates' expected sparsity to `structured.target_sparsity`.

examples:
  sprune l0prune --config conf/prune_l0.yaml --train data/train --dev data/dev \\
      --out exp/l0/prune --shrink exp/l0/shrunk
  sprune l0prune --config conf/prune_l0.yaml --set structured.target_sparsity=0.6 \\
      --set train.max_steps=200 --train data/train --out exp/l0_s0.6

The YAML takes `upstream`, `freeze_feature_encoder`, `max_seconds`, `preload_audio`,
`structured:` (StructuredPruningConfig: target_sparsity, structures, target_ramp_ratio, beta,
straight_through, init_keep_prob, mask_lr, lambda_lr, teacher_layers) and `train:`
(TrainConfig); unknown keys are errors. The run folder gets config.yaml (the resolved config),
data.json, log.jsonl, checkpoint/, summary.json and masks/ (masks.json reports the scope
sparsity of the 0/1 masks and the expected sparsity of the gates). Re-running the same command
resumes a killed run and skips a finished one; --shrink DIR then writes the physically shrunk
upstream (as `sprune shrink --run OUT --out DIR`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "structured L0 pruning of an upstream by distillation (masks; optional shrink)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="structured-pruning YAML")
    parser.add_argument("--train", required=True, help="data dir whose audio trains the masks")
    parser.add_argument("--dev", help="data dir for the dev distillation loss (optional)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--upstream", help="upstream spec (overrides `upstream:` in --config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config key, e.g. structured.target_sparsity=0.6")
    parser.add_argument("--shrink", metavar="DIR",
                        help="after training, write the shrunk upstream to DIR")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch (default 0: torch's choice)")
    parser.add_argument("--restart", action="store_true", help="delete --out and start over")


def run(args: argparse.Namespace) -> int:
    import torch

    from sprune.errors import UserError
    from sprune.structured.run import finished, load_l0prune_config, train_masks

    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: give a positive count, or 0 for torch's choice")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_l0prune_config(args.config, args.overrides, args.upstream)
    out = Path(args.out)
    if args.shrink and Path(args.shrink).resolve() in (out.resolve(), *out.resolve().parents):
        raise UserError(f"--shrink {args.shrink} would hold the run folder {out}; pick another")
    if not args.restart and finished(out, config):
        print(f"{out}: trained before (masks/ and summary.json); not training again")
    else:   # --restart deletes --out once every input has been checked
        summary = train_masks(config, args.train, args.dev, out, where=args.config,
                              log=lambda msg: print(f"sprune l0prune: {msg}", flush=True),
                              show_progress=sys.stderr.isatty(), restart=args.restart)
        final = ", ".join(f"{k} {v:.4f}" for k, v in (summary.get("final_metrics") or {}).items())
        print(f"sprune l0prune: {summary['steps']} updates in {summary['wall_seconds']:.0f} s"
              + (f"; dev {final}" if final else ""))
    from sprune.io import read_json_object

    report = read_json_object(out / "masks" / "masks.json")["report"]
    print(f"{out}/masks: sparsity of the 0/1 masks {report['scope_sparsity']:.4f} "
          f"(expected {report['expected_scope_sparsity']:.4f}, target "
          f"{config.structured.target_sparsity:g}); {report['dense_parameters']} -> "
          f"{report['shrunk_parameters']} parameters")
    from sprune.structured.run import gap_note, undecided_fraction

    note = gap_note(report, undecided_fraction(out / "masks"))
    if note:
        print(f"sprune l0prune: {note}")
    if args.shrink:
        from sprune.bin import shrink

        return shrink.run(argparse.Namespace(masks=None, run=str(out), out=args.shrink,
                                             force=False))
    return 0
