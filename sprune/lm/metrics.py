"""What `sprune lm eval` reports about an LM: dev-set perplexity, parameters, FLOPs per token
and per-token latency of cached decoding.

    ppl = perplexity(lm, SentenceDataset(lines, vocab))        # {"ppl", "nll_per_token", ...}
    params = count_parameters(lm)                               # {"total", "nonzero", ...}
    flops = flops_per_token(lm, context=50)                     # dense multiply-adds x 2
    latency = token_latency(lm, batch=8, context=50, threads=1) # {"ms_per_token", ...}

Perplexity follows ESPnet's `espnet2/bin/lm_calc_perplexity.py`: each sentence is scored with
`<sos>` as context and `<eos>` predicted at its end, and ppl = exp(sum of NLL / predicted
tokens) over the whole set (not a mean of per-sentence perplexities).

Size: a model's "size" -- what the pruning targets of paper 002 (1M ... 20M) mean -- is its
*non-zero* parameters over the whole model, embeddings, output layer, biases and LayerNorms
included (`count_parameters(...)["nonzero"]`). For a shrunk (structured / low-rank) model that
is its dense parameter count; for a masked (unstructured) model it is what the mask keeps.
(An untrained model reads a little under its total: LayerNorm biases start at exactly 0.)

FLOPs: multiply-adds x 2 of one cached decoding step (`TransformerLM.step` with one new token)
after `context` tokens are in the cache. Counted: every Linear (in x out; a factorized layer
r (in + out)), the attention scores q k^T and the weighted sum of values (2 x 2 x H_l x d x
(context + 1) per block: the new token attends to the cache and to itself) and the output
layer. Not counted: the embedding lookup (a gather, 0), biases, LayerNorms, ReLU, softmax,
positional encodings and residual adds (element-wise work, O(d_model) per block).
A masked model runs dense kernels, so its FLOPs are the dense FLOPs; `flops_per_token_nonzero`
gives the *theoretical* count if every zero weight were skipped (2 per non-zero Linear weight),
which no kernel here achieves.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sprune.lm.config import LMConfig
from sprune.lm.model import TransformerLM

FLOPS_COUNTED = ("multiply-adds x 2 of one cached decoding step: Linear layers (factorized: "
                 "r (in + out)), attention scores and weighted sum over context + 1 keys, "
                 "output layer; embedding lookup, biases, LayerNorm, softmax, ReLU not counted")


# -- perplexity ---------------------------------------------------------------------------------
def _length_order(dataset: Sequence[Any]) -> list[int]:
    """Indices longest first (less padding per batch), ties by index; dataset order when the
    items have no length. The order changes no sum, only the padding."""
    if callable(getattr(dataset, "lengths", None)):
        lengths = list(dataset.lengths())
    else:
        first = dataset[0]
        if isinstance(first, Mapping) or not hasattr(first, "__len__"):
            return list(range(len(dataset)))
        lengths = [len(dataset[i]) for i in range(len(dataset))]
    return sorted(range(len(dataset)), key=lambda i: (-lengths[i], i))


def perplexity(model: TransformerLM, dataset: Sequence[Any], batch_size: int = 32,
               device: str | torch.device | None = None,
               collate: Callable[[list[Any]], dict[str, torch.Tensor]] | None = None,
               progress: bool = False) -> dict[str, float | int]:
    """Perplexity of `model` on the sentences of `dataset` (a `sprune.lm.dataset.SentenceDataset`
    or any sequence whose items `collate` turns into {"tokens" [B, T], "lengths" [B]}: padded
    `<sos> w_1 .. w_n <eos>` with lengths n + 2; default `collate_sentences`).

    A sentence of n BPE tokens contributes n + 1 predictions (w_1 .. w_n and `<eos>`, each
    given `<sos>` and the tokens before it) -- the same count as ESPnet's lm_calc_perplexity,
    whose `nll()` pads `<sos>` in front and `<eos>` behind and counts text_lengths + 1 tokens
    per sentence. Returns ppl = exp(nll_per_token), nll_per_token (nats), num_tokens
    (predictions), num_sentences (a SentenceDataset's `sentences`: a long sentence cut into
    windows counts once; else len(dataset)) and, for a SentenceDataset, unk_tokens (its
    `<unk>` count, the OOV tokens). Runs in eval mode without gradients (the model's mode is
    restored); with `device` the model is moved there first. In a distributed run each
    process scores its share of the batches and the sums are added.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} < 1")
    if len(dataset) == 0:
        raise ValueError("no sentences to score")
    if collate is None:
        from sprune.lm.dataset import collate_sentences as collate
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    order = _length_order(dataset)
    from sprune.training import distributed

    starts = distributed.my_share(range(0, len(order), batch_size))   # this process's batches
    was_training = model.training
    model.eval()
    nll_sum, num_tokens = 0.0, 0
    try:
        with torch.inference_mode():
            for start in tqdm(starts, desc="perplexity", unit="batch", disable=not progress):
                batch = collate([dataset[i] for i in order[start:start + batch_size]])
                out = model({"tokens": batch["tokens"].to(device),
                             "lengths": batch["lengths"].to(device)})
                nll_sum += float(out["nll_sum"].double())
                num_tokens += int(out["num_tokens"])
    finally:
        model.train(was_training)
    nll_sum, total_tokens = distributed.sum_over_processes([nll_sum, num_tokens])
    num_tokens = int(total_tokens)
    nll_per_token = nll_sum / max(num_tokens, 1)
    result: dict[str, float | int] = {
        "ppl": math.exp(nll_per_token), "nll_per_token": nll_per_token,
        "num_tokens": num_tokens, "num_sentences": int(getattr(dataset, "sentences",
                                                                 len(dataset)))}
    if hasattr(dataset, "unk_count"):
        result["unk_tokens"] = int(dataset.unk_count)
    return result


# -- parameters ---------------------------------------------------------------------------------
def count_parameters(model: TransformerLM) -> dict[str, int]:
    """Parameters of `model`: total, nonzero (the model's *size*, see the module docstring),
    and the total of its parts -- embedding (token embedding), input (the Linear + LayerNorm
    from embed_dim to d_model), blocks (every Transformer block), final_norm and output (the
    vocabulary projection, bias included); the parts add up to total. nonzero_blocks: the
    non-zero parameters of the blocks (where the pruning scopes act)."""
    parts = {"embedding": 0, "input": 0, "blocks": 0, "final_norm": 0, "output": 0}
    prefixes = {"embed.": "embedding", "input_proj.": "input", "input_norm.": "input",
                "layers.": "blocks", "final_norm.": "final_norm", "output.": "output"}
    nonzero_blocks = 0
    for name, param in model.named_parameters():
        part = next(p for prefix, p in prefixes.items() if name.startswith(prefix))
        parts[part] += param.numel()
        if part == "blocks":
            nonzero_blocks += int(torch.count_nonzero(param))
    return {"total": model.num_parameters(), "nonzero": model.num_parameters(nonzero=True),
            **parts, "nonzero_blocks": nonzero_blocks}


# -- FLOPs --------------------------------------------------------------------------------------
def _linear_macs(config: LMConfig, name: str, in_features: int, out_features: int) -> int:
    rank = config.ranks.get(name)
    return in_features * out_features if rank is None else rank * (in_features + out_features)


def flops_per_token(config_or_model: LMConfig | TransformerLM, context: int = 50) -> int:
    """Dense FLOPs (multiply-adds x 2) of one cached decoding step after `context` cached
    tokens, for one hypothesis: what the model's dense kernels execute, masked zeros
    included. See the module docstring for what is counted."""
    config = (config_or_model.config if isinstance(config_or_model, TransformerLM)
              else config_or_model)
    if context < 0:
        raise ValueError(f"context {context} < 0")
    d_model, head_dim = config.d_model, config.head_dim
    macs = config.embed_dim * d_model + d_model * config.vocab_size
    for i in range(config.layers):
        heads, units = config.heads_of(i), config.ffn_of(i)
        inner = heads * head_dim
        if heads:
            for proj in ("q", "k", "v"):
                macs += _linear_macs(config, f"layers.{i}.attention.{proj}", d_model, inner)
            macs += _linear_macs(config, f"layers.{i}.attention.out", inner, d_model)
            macs += 2 * inner * (context + 1)  # q k^T and the weighted sum of v
        if units:
            macs += _linear_macs(config, f"layers.{i}.ffn.up", d_model, units)
            macs += _linear_macs(config, f"layers.{i}.ffn.down", units, d_model)
    return 2 * macs


def flops_per_token_nonzero(model: TransformerLM, context: int = 50) -> int:
    """*Theoretical* FLOPs of the same step if zero weights were skipped: 2 per non-zero
    weight of every Linear (factorized layers: of both factors), attention as dense (it
    multiplies activations). Equals `flops_per_token` for a model without zero weights; no
    kernel used here runs at this count."""
    dense = flops_per_token(model, context)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            dense -= 2 * (module.weight.numel() - int(torch.count_nonzero(module.weight)))
    return dense


def linear_flops_per_token(config_or_model: LMConfig | TransformerLM) -> int:
    """The Linear-layer part of `flops_per_token` (every term but attention), which does not
    depend on the context length."""
    config = (config_or_model.config if isinstance(config_or_model, TransformerLM)
              else config_or_model)
    attention = sum(4 * config.heads_of(i) * config.head_dim for i in range(config.layers))
    return flops_per_token(config, 0) - attention


# -- latency ------------------------------------------------------------------------------------
def _filled_cache(model: TransformerLM, batch: int, context: int, generator: torch.Generator,
                  device: torch.device) -> tuple[Any, torch.Tensor]:
    """A cache holding `context` random tokens per hypothesis and the next tokens [B, 1]."""
    # The last id is <sos/eos>; filling with ordinary tokens keeps the state realistic.
    high = model.config.vocab_size - 1
    # Room for the timed token: each timed step appends in place after the same context.
    cache = model.init_cache(batch, device, capacity=context + 1)
    if context:
        prefix = torch.randint(0, high, (batch, context), generator=generator).to(device)
        _, cache = model.step(prefix, cache)
    nxt = torch.randint(0, high, (batch, 1), generator=generator).to(device)
    return cache, nxt


def token_latency(model: TransformerLM, batch: int = 8, context: int = 50, steps: int = 20,
                  threads: int | None = 1, repeats: int = 5, warmup: int = 3,
                  device: str | torch.device | None = None, seed: int = 0) -> dict[str, Any]:
    """Per-token latency of cached decoding for `batch` hypotheses at context `context`.

    The cache is filled with `context` random tokens per hypothesis (untimed); then one
    repeat times `steps` calls of `model.step(next [B, 1], cache)`, each from that same cache,
    so every timed step is the step after `context` tokens (what `flops_per_token(context)`
    counts). After `warmup` untimed steps, `repeats` repeats are timed (eval mode,
    `torch.inference_mode`, CUDA synchronised around each repeat); with `threads` torch's
    CPU thread count is set for the measurement and restored afterwards (None: left alone).

    Returns ms_per_token: the median over repeats of the mean time of one step (one new token
    for each of the `batch` hypotheses: the latency a beam search of `batch` waits per token);
    ms_per_hypothesis_token = ms_per_token / batch (throughput view); repeat_ms (each
    repeat's mean step time) and the settings (batch, context, steps, repeats, warmup,
    threads, device).
    """
    for name, value, least in (("batch", batch, 1), ("steps", steps, 1), ("repeats", repeats, 1),
                               ("context", context, 0), ("warmup", warmup, 0)):
        if value < least:
            raise ValueError(f"{name} {value} < {least}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads {threads} < 1")
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    previous_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    repeat_s: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            generator = torch.Generator().manual_seed(seed)
            cache, nxt = _filled_cache(model, batch, context, generator, device)
            for _ in range(warmup):
                model.step(nxt, cache)
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                for _ in range(steps):
                    model.step(nxt, cache)
                sync()
                repeat_s.append((time.perf_counter() - start) / steps)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    ms = 1000 * statistics.median(repeat_s)
    return {"ms_per_token": ms, "ms_per_hypothesis_token": ms / batch,
            "repeat_ms": [1000 * s for s in repeat_s], "batch": batch, "context": context,
            "steps": steps, "repeats": repeats, "warmup": warmup, "threads": threads,
            "device": str(device)}
