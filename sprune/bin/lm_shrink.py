"""Shrink a structured or low-rank pruned LM into a smaller dense LM (the same log-probs).

  sprune lm shrink exp/lm/structured_taylor_cubic_400k --out exp/lm/small
  sprune lm shrink LM_DIR --mask MASK_DIR --out exp/lm/small

The first form takes a `sprune lm prune` run folder (its final/ and mask/); the second an LM
folder and a mask folder. `sprune lm prune` already writes shrunk/ for structured and lowrank
runs; this command is for masks made elsewhere. Attention heads, FFN units and rank
components whose weights the mask prunes are removed; a sublayer left without any is dropped.
An unstructured mask leaves nothing to remove (one-line error).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a `sprune lm prune` run folder, or an LM folder with --mask")
    parser.add_argument("--mask", type=Path, help="mask folder (default: SOURCE/mask)")
    parser.add_argument("--out", required=True, type=Path, help="LM folder to write")


def run(args: argparse.Namespace) -> int:
    from sprune.lm.checkpoint import load_lm, save_lm, vocab_path
    from sprune.lm.shrink import shrink
    from sprune.prune.mask import Mask

    lm_dir = args.source / "final" if (args.source / "final").is_dir() else args.source
    mask_dir = args.mask or args.source / "mask"
    model, document = load_lm(lm_dir)
    mask = Mask.load(mask_dir)
    mask.check_fits(model)
    small = shrink(model, mask)
    if small.num_parameters() == model.num_parameters():
        raise UserError(f"{mask_dir} removes no head, FFN unit or rank component (an "
                        "unstructured mask?); nothing to shrink: use the masked LM as it is")
    save_lm(args.out, small, vocab_path(lm_dir), info={"shrunk_from": str(lm_dir),
                                                       **document.get("info", {})})
    print(f"{args.out}: {model.num_parameters():,} -> {small.num_parameters():,} parameters "
          f"(heads {small.config.layer_heads}, FFN {small.config.layer_ffn})")
    return 0
