"""Prune a trained LM (criterion x method x schedule) to a target size and fine-tune it.

  sprune lm prune --config conf/lm/prune.yaml --lm exp/lm/dense/final --text data/lm/kjv \\
      --method structured --criterion taylor --schedule cubic --target-params 400000 \\
      --out exp/lm/structured_taylor_cubic_400k

The YAML (conf/lm/prune.yaml: sprune.lm.prune.LMPruneConfig) holds the defaults; the options
override it. Methods: unstructured (weights), structured (attention heads + FFN units; whole
blocks go when emptied, or `--set 'structures=[blocks]'`), lowrank (SVD-factorized block
Linears, rank components pruned). Criteria: magnitude, taylor, wanda, random. Schedules:
one-shot, cubic, linear (same number of fine-tuning updates). A finished run is reused, a
killed one resumes (run the same command again). The run folder gets mask/, final/ (the
masked LM), shrunk/ (structured, lowrank), snapshots/ (the sizes of `snapshots:`) and
outcome.json (dev perplexity, parameters, FLOPs per token). See sprune.lm.prune.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pruning config (conf/lm/prune.yaml)")
    parser.add_argument("--lm", required=True, type=Path, help="the trained LM folder to prune")
    parser.add_argument("--text", required=True, type=Path, metavar="DIR",
                        help="folder with train.txt and dev.txt")
    parser.add_argument("--out", required=True, type=Path, help="run folder to write")
    parser.add_argument("--method", help="unstructured | structured | lowrank")
    parser.add_argument("--criterion", help="magnitude | taylor | wanda | random")
    parser.add_argument("--schedule", help="one-shot | cubic | linear")
    parser.add_argument("--target-params", type=int, metavar="N",
                        help="size to reach, in parameters of the whole LM")
    parser.add_argument("--sparsity", type=float, help="or: sparsity of the pruned scope")
    parser.add_argument("--bpe", type=Path, help="BPE model (default: the LM folder's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. train.max_steps=500")
    parser.add_argument("--restart", action="store_true", help="delete --out and start over")


def run(args: argparse.Namespace) -> int:
    from sprune.bin.lm_train import start_run
    from sprune.config import load_config
    from sprune.lm.checkpoint import load_lm, vocab_path
    from sprune.lm.prune import LMPruneConfig, prune_lm
    from sprune.lm.vocab import LMVocab, check_vocab_matches

    config = load_config(LMPruneConfig, args.config, args.overrides)
    changes = {k: v for k, v in (("method", args.method), ("criterion", args.criterion),
                                 ("schedule", args.schedule)) if v is not None}
    if args.target_params is not None or args.sparsity is not None:
        changes.update(target_params=args.target_params, sparsity=args.sparsity)
    config = dataclasses.replace(config, **changes)
    config.check()
    model, _ = load_lm(args.lm)
    bpe = args.bpe or vocab_path(args.lm)
    if bpe is None:
        raise UserError(f"{args.lm} holds no bpe.model; pass --bpe")
    vocab = LMVocab.load(bpe)
    check_vocab_matches(vocab, model.config.vocab_size, str(args.lm))
    data = start_run(args, vocab, config.max_len, config.dev_lines)
    if data is None:
        return 0
    outcome = prune_lm(model.train(), config, data, args.out, bpe,
                       info={"pruned_from": str(args.lm)})
    print(f"{args.out}: {config.method} / {config.criterion} / {config.schedule}: "
          f"{outcome['params']:,} parameters, dev ppl {outcome['dev']['ppl']:.2f}")
    return 0
