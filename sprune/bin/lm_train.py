"""Train a dense Transformer LM, or a from-scratch baseline of a given size.

  sprune lm train --config conf/lm/train.yaml --text data/lm/kjv --bpe data/lm/bpe.model \\
      --out exp/lm/dense
  sprune lm train --config conf/lm/train.yaml --text data/lm/kjv --bpe data/lm/bpe.model \\
      --target-params 500000 --set train.max_steps=1500 --out exp/lm/scratch_500k

--text is a folder with train.txt and dev.txt (`sprune lm text` writes them). The run folder
holds the Trainer's checkpoint (a killed run resumes: run the same command again; a finished
one is reused), final/ (the LM folder: config.json, model.safetensors, bpe.model) and
outcome.json (dev perplexity, parameters, FLOPs per token). --target-params keeps the
config's depth, vocabulary and embedding size and picks the widest d_model (FFN width scaled
with it) that stays within the target: paper 002's same-size dense baselines.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="LM training config (conf/lm/train.yaml)")
    parser.add_argument("--text", required=True, type=Path, metavar="DIR",
                        help="folder with train.txt and dev.txt")
    parser.add_argument("--bpe", required=True, type=Path, metavar="MODEL",
                        help="sentencepiece model (sprune lm bpe)")
    parser.add_argument("--out", required=True, type=Path, help="run folder to write")
    parser.add_argument("--target-params", type=int, metavar="N",
                        help="train a dense baseline of at most N parameters instead")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3")
    parser.add_argument("--restart", action="store_true", help="delete --out and start over")


def load_text(folder: Path, splits: tuple[str, ...] = ("train", "dev")) -> dict[str, list[str]]:
    """The non-empty lines of folder/<split>.txt (one-line errors for missing / bad files)."""
    from sprune.lm.text import read_lines

    if not folder.is_dir():
        raise UserError(f"--text {folder}: no such folder; give the folder `sprune lm text` "
                        "wrote (train.txt, dev.txt)")
    return {split: [l for l in read_lines(folder / f"{split}.txt") if l.strip()]
            for split in splits}


def start_run(args: argparse.Namespace, vocab, max_len: int, dev_lines: int | None):
    """The encoded train/dev text of --text, or None when --out finished before (shared by
    `sprune lm train` and `sprune lm prune`); --restart deletes --out once the text has
    loaded, so bad input deletes nothing."""
    from sprune.lm.train import LMData

    if not args.restart and (args.out / "outcome.json").is_file():
        print(f"{args.out}: finished before (outcome.json); nothing to do")
        return None
    text = load_text(args.text)
    data = LMData(vocab, text["train"], text["dev"], max_len, dev_lines)
    if args.restart and args.out.exists():
        shutil.rmtree(args.out)
    return data


def run(args: argparse.Namespace) -> int:
    from sprune.config import load_config
    from sprune.lm.train import LMTrainConfig, sized_config, train_lm
    from sprune.lm.vocab import LMVocab

    config = load_config(LMTrainConfig, args.config, args.overrides)
    vocab = LMVocab.load(args.bpe)
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, vocab_size=vocab.vocab_size))
    info = {}
    if args.target_params is not None:
        config = dataclasses.replace(config, model=sized_config(config.model, args.target_params))
        info = {"target_params": args.target_params}
    data = start_run(args, vocab, config.max_len, config.dev_lines)
    if data is None:
        return 0
    outcome = train_lm(config, data, args.out, args.bpe, info=info)
    print(f"{args.out}: {outcome['params']:,} parameters, dev ppl {outcome['dev']['ppl']:.2f} "
          f"after {outcome['steps']} updates")
    return 0
