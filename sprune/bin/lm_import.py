"""Convert an espnet2 TransformerLM checkpoint into a sprune LM folder.

  sprune lm import --config exp/lm_train/config.yaml --model exp/lm_train/valid.loss.ave.pth \\
      --bpe data/token_list/bpe.model --out exp/lm/espnet

--config is the LM's training config.yaml (lm: transformer, lm_conf, token_list), --model the
.pth that ESPnet's decoders load with it (--lm_file). Both are read without unpickling code
(torch.load weights_only, yaml.safe_load). With --bpe the token list must be that BPE model's
(<blank>, <unk>, its pieces, <sos/eos>), which is copied into the LM folder; without it the
LM folder has no bpe.model (pass --token-list to `sprune lm export` to convert it back).
The LM folder records where it came from (config.json info.imported_from).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="CONFIG_YAML",
                        help="the ESPnet LM's config.yaml (lm: transformer)")
    parser.add_argument("--model", required=True, metavar="PTH",
                        help="the ESPnet LM's weights (.pth, keys lm.*)")
    parser.add_argument("--bpe", metavar="MODEL",
                        help="the sentencepiece .model of the LM's tokens (copied along)")
    parser.add_argument("--out", required=True, metavar="LM_DIR", help="sprune LM folder to write")


def run(args: argparse.Namespace) -> int:
    from sprune.lm.espnet_format import import_lm

    model = import_lm(args.config, args.model, args.out, args.bpe)
    config = model.config
    print(f"{args.out}: sprune LM from {args.model} ({model.num_parameters():,} parameters, "
          f"{config.layers} layers, d_model {config.d_model}, vocab {config.vocab_size}"
          f"{'' if args.bpe else ', no bpe.model'})")
    return 0
