"""Convert a sprune LM folder into an espnet2 TransformerLM checkpoint.

  sprune lm export exp/lm/dense --out exp/lm/dense_espnet
  # then, in an ESPnet recipe:  asr_inference.py ... \\
  #     --lm_train_config exp/lm/dense_espnet/config.yaml --lm_file exp/lm/dense_espnet/model.pth

--out gets config.yaml (lm: transformer, lm_conf, token_list), model.pth (the state dict of
espnet2's ESPnetLanguageModel), tokens.txt and the BPE model: what
espnet2.tasks.lm.LMTask.build_model_from_file reads, with the same scores as the sprune LM.
Only a uniform LM exports (dense or masked: pruned weights are zeros); a shrunk or
factorized LM has per-layer sizes that espnet2's TransformerLM cannot hold. Use such an LM as
an ESPnet scorer directly: sprune's TransformerLM implements BatchScorerInterface.
An LM without bpe.model (imported without --bpe) needs --token-list.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lm", metavar="LM_DIR", help="sprune LM folder")
    parser.add_argument("--out", required=True, metavar="ESPNET_DIR",
                        help="folder to write config.yaml, model.pth, tokens.txt, bpe.model into")
    parser.add_argument("--token-list", metavar="TOKENS_TXT",
                        help="token list (one per line, ending with <sos/eos>) for an LM "
                             "without bpe.model")


def run(args: argparse.Namespace) -> int:
    from sprune.lm.espnet_format import CONFIG_FILE, MODEL_FILE, export_lm

    model = export_lm(args.lm, args.out, args.token_list)
    out = Path(args.out)
    print(f"{out}: espnet2 TransformerLM from {args.lm} ({model.num_parameters():,} "
          f"parameters, {model.num_parameters(nonzero=True):,} non-zero); decode with "
          f"--lm_train_config {out / CONFIG_FILE} --lm_file {out / MODEL_FILE}")
    return 0
