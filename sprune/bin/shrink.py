"""Physically shrink an upstream with its trained structured-pruning masks (paper 004).

  sprune shrink --run exp/prune/l0_s0.80 --out exp/prune/l0_s0.80/shrunk
  sprune shrink --masks exp/prune/l0_s0.80/masks --out shrunk

The deterministic 0/1 gates (each group keeps its expected number of structures, those
with the largest log_alpha) select the kept heads, head dims, FFN units and conv channels;
removed attention and FFN blocks are dropped. --out becomes a normal sprune upstream dir
(config.json with per-layer sizes + model.safetensors) that `load_upstream` and the s3prl
bridge read; its outputs equal the masked model's in eval mode.

An --out made from the same masks (its config.json newer than every file of the masks dir)
is left as it is, so recipes can call this on every run; --force makes it again.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sprune.errors import UserError

HELP = "shrink an upstream with trained structured masks into a smaller dense one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--masks", metavar="DIR",
                        help="masks dir (masks.json, masks.safetensors, upstream/)")
    source.add_argument("--run", metavar="DIR",
                        help="structured-pruning run folder (uses its masks/ dir)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output upstream dir")
    parser.add_argument("--force", action="store_true",
                        help="shrink again even when --out is newer than the masks")


def up_to_date(out: Path, masks_dir: Path) -> bool:
    """Whether out/config.json is newer than every file of the masks dir."""
    config = out / "config.json"
    if not config.is_file():
        return False
    newest = max((f.stat().st_mtime for f in masks_dir.rglob("*") if f.is_file()), default=0.0)
    return config.stat().st_mtime > newest


def run(args: argparse.Namespace) -> int:
    from sprune.structured.mask_store import load_masks, resolve_masks_dir
    from sprune.structured.shrink_from_masks import shrink_masked
    from sprune.upstream.loaders import save_upstream

    directory = resolve_masks_dir(masks=args.masks, run=args.run)
    out = Path(args.out)
    if out.resolve() == directory.resolve() or directory.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the masks dir {directory}; write it elsewhere")
    if not args.force and up_to_date(out, directory):
        print(f"{out}: up to date with {directory} (newer than its masks); --force shrinks again")
        return 0
    masked, _ = load_masks(directory)
    dense = masked.upstream.num_parameters()
    shrunk = shrink_masked(masked)
    save_upstream(shrunk, out)
    kept = shrunk.num_parameters()
    layers = ", ".join(f"{len(layer.kept_heads)}h/{layer.ffn_dim}f"
                       for layer in shrunk.config.layers)
    print(f"{out}: {dense} -> {kept} parameters ({kept / dense:.1%} kept); "
          f"heads/FFN per layer: {layers}")
    return 0
