"""Pretrain an upstream HuBERT-style (iteration 1): masked prediction of k-means units of MFCCs.

The training audio (utterances of --train; labels are not used) gives 39-dim MFCC frames; a
seeded k-means clusters a sample of them; each 20 ms model frame gets the unit of its MFCC
frame; spans of the projected CNN features are masked and the transformer learns to predict
the masked frames' units (cosine logits, temperature 0.1). --dev measures masked-prediction
accuracy during training.

example (the ssl1 recipe's stage 2):
  sprune pretrain --config conf/pretrain.yaml --train data/train --dev data/dev \\
      --out exp/pretrain
  sprune pretrain ... --set train.max_steps=200 --set model.num_layers=2

Writes OUT/pretrain.json (the resolved config), OUT/kmeans.safetensors, the Trainer's
OUT/log.jsonl, OUT/checkpoint/ and OUT/summary.json, and finally OUT/upstream/ (config.json +
model.safetensors, loadable with any --upstream option). A killed run resumes from its last
checkpoint when run again with the same config; a finished one is not run again.
"""
from __future__ import annotations

import argparse
import sys

HELP = "HuBERT-style self-supervised pretraining of an upstream (MFCC k-means units)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pretraining YAML (model, units, mask, head, train); "
                        "default: the built-in defaults")
    parser.add_argument("--train", required=True, help="data dir whose audio is pretrained on")
    parser.add_argument("--dev", required=True, help="data dir for masked-prediction accuracy")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch (default 0: torch's choice; 1 is often "
                        "fastest on a shared machine)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. train.max_steps=100")


def run(args: argparse.Namespace) -> int:
    from sprune.errors import UserError
    from sprune.ssl.hubert_pretrain import load_pretrain_config, pretrain

    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: give a positive count, or 0 for torch's choice")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = load_pretrain_config(args.config, args.overrides)
    summary = pretrain(config, args.train, args.dev, args.out,
                       log=lambda msg: print(f"sprune pretrain: {msg}", flush=True),
                       progress=sys.stderr.isatty())
    final = summary.get("final_metrics") or {}
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in final.items())
    print(f"sprune pretrain: {summary['steps']} updates, {summary['passes']:.2f} passes over the "
          f"training audio; dev {metrics}")
    return 0
