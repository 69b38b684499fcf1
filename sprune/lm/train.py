"""Training an LM with the one `Trainer` (sprune/training/): the dense LM, the from-scratch
baselines of given sizes, and (through `sprune.lm.prune`) the fine-tuning of pruned LMs.

A run folder (`sprune lm train --out DIR`):

    DIR/checkpoint/, log.jsonl, summary.json    the Trainer's (resumable: re-run to continue)
    DIR/final/                                  the LM folder (sprune.lm.checkpoint) + bpe.model
    DIR/outcome.json                            dev perplexity, parameters, FLOPs per token
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.lm.config import LMConfig
from sprune.lm.dataset import SentenceDataset, collate_sentences
from sprune.lm.model import TransformerLM
from sprune.lm.vocab import LMVocab
from sprune.training import Callback, TrainConfig, Trainer


def _lm_train_defaults() -> TrainConfig:
    return TrainConfig(max_steps=1000, batch_size=32, lr=1e-3, weight_decay=0.01,
                       warmup_ratio=0.05, eval_every=200, save_every=200, log_every=20,
                       metric="ppl", metric_mode="min", bucket_by_length=True)


@dataclass
class LMTrainConfig:
    """conf/lm/train*.yaml: the architecture, the optimisation and the data handling."""

    model: LMConfig = field(default_factory=LMConfig)
    train: TrainConfig = field(default_factory=_lm_train_defaults)
    max_len: int = 128               # longer sentences are cut into windows (sprune.lm.dataset)
    eval_batch_size: int = 64
    dev_lines: int | None = None     # score only the first N dev sentences during training


class LMData:
    """The BPE units and the encoded training / dev text of one run."""

    def __init__(self, vocab: LMVocab, train_lines: Sequence[str] | None,
                 dev_lines: Sequence[str], max_len: int, dev_limit: int | None = None) -> None:
        self.vocab = vocab
        self.train = (SentenceDataset(train_lines, vocab, max_len=max_len, progress=True)
                      if train_lines is not None else None)
        self.dev = SentenceDataset(list(dev_lines)[:dev_limit] if dev_limit else dev_lines,
                                   vocab, max_len=max_len)
        if self.train is not None and len(self.train) == 0:
            raise UserError("the LM training text has no sentence left after normalisation")
        if len(self.dev) == 0:
            raise UserError("the LM dev text has no sentence left after normalisation")


def dev_evaluator(data: LMData, batch_size: int) -> Callable[[nn.Module], dict[str, float]]:
    from sprune.lm.metrics import perplexity

    def evaluate(model: nn.Module) -> dict[str, float]:
        result = perplexity(model, data.dev, batch_size=batch_size)
        return {"ppl": float(result["ppl"]), "nll": float(result["nll_per_token"])}

    return evaluate


def make_trainer(model: TransformerLM, data: LMData, config: TrainConfig, out_dir: Path,
                 eval_batch_size: int, callbacks: Sequence[Callback] = ()) -> Trainer:
    if data.train is None:
        raise RuntimeError("no training text loaded")
    return Trainer(model, data.train, collate_sentences, config, out_dir,
                   evaluate=dev_evaluator(data, eval_batch_size), callbacks=callbacks)


def sized_config(base: LMConfig, target_params: int) -> LMConfig:
    """The widest `base`-shaped LM with at most `target_params` parameters: same depth,
    vocabulary and embedding size, d_model a multiple of the heads, the FFN width scaled with
    it (the from-scratch baselines of paper 002 are dense models of each target size)."""
    def count(d_model: int) -> int:
        ffn = max(1, round(base.ffn_dim * d_model / base.d_model))
        config = dataclasses.replace(base, d_model=d_model, ffn_dim=ffn, layer_heads=None,
                                     layer_ffn=None, ranks={})
        with torch.device("meta"):
            return TransformerLM(config).num_parameters(), config

    best = None
    for d_model in range(base.heads, 4 * base.d_model + 1, base.heads):
        params, config = count(d_model)
        if params > target_params:
            break
        best = config
    if best is None:
        smallest = count(base.heads)[0]
        raise UserError(f"target size {target_params:,} is below the smallest LM of this shape "
                        f"({smallest:,} parameters, d_model {base.heads}: the embeddings and "
                        "output layer alone); give a larger target or a smaller embed_dim")
    return best


def train_lm(config: LMTrainConfig, data: LMData, out_dir: Path, vocab_file: Path,
             resume: bool = True, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a fresh LM of `config.model` into `out_dir` (resumed when killed, reused when
    finished); returns its outcome (dev ppl, parameters, FLOPs per token)."""
    from sprune.lm.checkpoint import save_lm
    from sprune.lm.metrics import flops_per_token

    outcome_path = out_dir / "outcome.json"
    if outcome_path.is_file() and (out_dir / "final").is_dir():
        return json.loads(outcome_path.read_text())
    model_config = dataclasses.replace(config.model, vocab_size=data.vocab.vocab_size)
    torch.manual_seed(config.train.seed)
    model = TransformerLM(model_config)
    trainer = make_trainer(model, data, config.train, out_dir, config.eval_batch_size)
    summary = trainer.fit(resume=resume)
    model = model.cpu().eval()
    save_lm(out_dir / "final", model, vocab_file, info={"trained": info or {},
                                                        "steps": summary["steps"]})
    outcome = {"kind": "scratch" if info and info.get("target_params") else "dense",
               "params": model.num_parameters(), "total_params": model.num_parameters(),
               "flops_per_token": flops_per_token(model), "dev": summary["final_metrics"],
               "steps": summary["steps"], "wall_seconds": summary["wall_seconds"],
               **(info or {})}
    atomic_write_text(outcome_path, json.dumps(outcome, indent=1) + "\n")
    return outcome
