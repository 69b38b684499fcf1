"""Benchmark: what pruning an LM buys at decoding time, and what its scoring costs (issue 13).

One process, random weights (latency does not depend on their values), three measurements,
each a ratio of two things timed side by side, interleaved (A B A B ...), medians taken:

1. Decoding latency of shrunk LMs against the dense LM: one cached `TransformerLM.step` of
   --batch hypotheses after --context tokens (`sprune.lm.metrics.token_latency`, called once
   per model per round with repeats=1), and the FLOPs ratio (`flops_per_token`). Rows:
   structured (heads + FFN units) and lowrank (neutral-rank SVD, then rank components) with
   --prune fractions of the dense LM's block parameters removed, each selected by magnitude
   through `sprune.lm.prune.Selector` and shrunk with `sprune.lm.shrink.shrink` (checked
   equal to the masked model before timing). Target: speed-up / FLOPs ratio >= 0.85.
2. ESPnet-style scoring of --batch hypotheses at prefix length --context: the cached
   `batch_score` (one new token, per-hypothesis states stacked and split again) against
   re-running the whole prefix (`logits()` on [B, context + 1], last position), and ESPnet's
   own espnet2 `TransformerLM.batch_score` with the same weights (its cache holds block
   outputs; keys and values of the prefix are projected again at every step). Target:
   cached >= 10x faster than re-running the prefix.
3. One Taylor accumulation pass (`score_parameters` with the taylor criterion on one batch:
   forward + backward + |w dL/dw| accumulated, eval mode) against one training update as the
   Trainer runs it (train mode: forward + backward + gradient clipping + AdamW step), on the
   same batch of --train-batch sentences x --train-tokens tokens. Target: <= 1.5x.

Weights: block Linears are drawn N(0, 0.02) and each head / FFN unit scaled by its own
log-normal factor (sigma 0.5), a stand-in for the spread of unit importance in a trained LM:
with torch's default init every FFN unit (its down-projection column is drawn at a smaller
scale) scores below every head, and magnitude pruning would remove the FFN sublayers first.

Defaults are paper 002's dense LM (conf/lm/train.yaml: 6 blocks, d_model 512, 8 heads, FFN
2048, embedding 512) with a 1000-token vocabulary; they finish in about a minute on one CPU
thread (well under 5). --small is a ~10 s smoke run (the test's). Targets are reported, not
asserted.

    tools/venv/bin/python bench/lm_prune.py [--threads 1] [--device cpu|cuda] [--small]
        [--layers 6] [--d-model 512] [--heads 8] [--ffn 2048] [--embed 512] [--vocab 1000]
        [--batch 8] [--context 50] [--steps 20] [--rounds 9] [--calls 5]
        [--train-batch 32] [--train-tokens 40] [--train-rounds 5] [--prune 0.5 0.75]
        [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import torch

from sprune.io import atomic_write_text
from sprune.lm.config import LMConfig
from sprune.lm.lowrank import factorize
from sprune.lm.metrics import count_parameters, flops_per_token, token_latency
from sprune.lm.model import TransformerLM
from sprune.lm.prune import LMPruneConfig, Selector
from sprune.lm.shrink import shrink
from sprune.machine import cpu_model, load_average
from sprune.malloc import keep_freed_memory
from sprune.prune.apply import zero_pruned
from sprune.prune.criteria import make_criterion
from sprune.prune.statistics import score_parameters
from sprune.training import param_groups

SIZES: dict[str, dict[str, Any]] = {
    "default": {"layers": 6, "d_model": 512, "heads": 8, "ffn": 2048, "embed": 512,
                "vocab": 1000, "steps": 20, "rounds": 9, "calls": 5, "train_batch": 32,
                "train_tokens": 40, "train_rounds": 5},
    "small": {"layers": 2, "d_model": 64, "heads": 4, "ffn": 256, "embed": 64, "vocab": 100,
              "steps": 5, "rounds": 3, "calls": 2, "train_batch": 8, "train_tokens": 20,
              "train_rounds": 2},
}
LATENCY_TARGET = 0.85      # speed-up / FLOPs ratio
CACHE_TARGET = 10.0        # re-run prefix ms / cached batch_score ms
TAYLOR_TARGET = 1.5        # Taylor pass ms / training step ms
UNIT_SPREAD = 0.5          # sigma of the log-normal per-unit weight scale
SHRINK_TOLERANCE = 1e-4    # max |log p| difference, masked vs shrunk


# -- models -------------------------------------------------------------------------------------
def dense_lm(args: argparse.Namespace) -> TransformerLM:
    """The dense LM with the unit-spread random weights of the module docstring."""
    torch.manual_seed(0)
    config = LMConfig(vocab_size=args.vocab, embed_dim=args.embed, d_model=args.d_model,
                      heads=args.heads, ffn_dim=args.ffn, layers=args.layers)
    model = TransformerLM(config).eval()
    generator = torch.Generator().manual_seed(1)

    def spread(count: int) -> torch.Tensor:
        return torch.exp(UNIT_SPREAD * torch.randn(count, generator=generator))

    with torch.no_grad():
        for block in model.layers:
            attention, ffn = block.attention, block.ffn
            for linear in (attention.q, attention.k, attention.v, attention.out, ffn.up, ffn.down):
                linear.weight.normal_(0.0, 0.02, generator=generator)
            heads = spread(attention.heads).repeat_interleave(attention.head_dim)
            for linear in (attention.q, attention.k, attention.v):
                linear.weight.mul_(heads[:, None])
            attention.out.weight.mul_(heads[None, :])
            units = spread(ffn.up.out_features)
            ffn.up.weight.mul_(units[:, None])
            ffn.down.weight.mul_(units[None, :])
    return model


def pruned_lm(model: TransformerLM, method: str, target_params: int
              ) -> tuple[TransformerLM, float]:
    """(`model` pruned by magnitude to about `target_params` parameters by `method`
    (structured heads + FFN units, or lowrank from neutral rank) and shrunk,
    max |log p| difference between the masked and the shrunk model)."""
    if method == "lowrank":
        model = factorize(model, "neutral")
    config = LMPruneConfig(method=method, target_params=target_params)
    selector = Selector(model, config)
    scores = score_parameters(make_criterion("magnitude"), model, selector.scored, None, None)
    mask, _ = selector.select(scores, selector.sparsity_for(target_params), None)
    small = shrink(model, mask).eval()
    masked = TransformerLM(model.config).eval()
    masked.load_state_dict(model.state_dict())
    zero_pruned(masked, mask)
    tokens = torch.randint(0, model.config.vocab_size - 1, (2, 24),
                           generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        diff = (small.logits(tokens).log_softmax(-1)
                - masked.logits(tokens).log_softmax(-1)).abs().max().item()
    return small, diff


def structure_of(model: TransformerLM) -> str:
    """Per-block sizes of a shrunk LM, one short string."""
    config = model.config
    if config.ranks:
        per_block = []
        for i in range(config.layers):
            ranks = [str(r) for n, r in config.ranks.items() if n.startswith(f"layers.{i}.")]
            per_block.append("/".join(ranks))
        return "ranks q/k/v/out/up/down per block: " + "; ".join(per_block)
    return "heads | FFN units per block: " + "; ".join(
        f"{config.heads_of(i)} | {config.ffn_of(i)}" for i in range(config.layers))


# -- timing -------------------------------------------------------------------------------------
def synchronizer(device: torch.device) -> Callable[[], None]:
    """A call that waits for `device`'s queued work (CUDA; a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int, repeat: int,
                device: torch.device) -> dict[str, list[float]]:
    """ms per call of each callable: every round times `repeat` calls of each in turn
    (after one untimed call of each)."""
    sync = synchronizer(device)
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            for _ in range(repeat):
                call()
            sync()
            times[name].append(1000 * (time.perf_counter() - start) / repeat)
    return times


def latency_rounds(models: dict[str, TransformerLM], args: argparse.Namespace
                   ) -> dict[str, list[float]]:
    """ms per cached decoding step per model, one `token_latency` repeat per model per round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            result = token_latency(model, batch=args.batch, context=args.context,
                                   steps=args.steps, threads=args.threads, repeats=1, warmup=2)
            times[name].append(result["ms_per_token"])
    return times


def scoring_calls(model: TransformerLM, args: argparse.Namespace, device: torch.device
                  ) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """The three ways of scoring the next token of --batch prefixes of --context tokens, and
    the max |log p| difference of the cached and the ESPnet scores from re-running."""
    from espnet2.lm.transformer_lm import TransformerLM as EspnetTransformerLM
    from sprune.lm.espnet_format import to_espnet_state

    state, lm_conf = to_espnet_state(model)
    espnet = EspnetTransformerLM(model.config.vocab_size, **lm_conf)
    espnet.load_state_dict(state)
    espnet.to(device).eval()
    generator = torch.Generator().manual_seed(3)
    # ESPnet's target mask treats id 0 (<blank> in its token lists) as padding
    ys = torch.randint(1, model.config.vocab_size - 1, (args.batch, args.context + 1),
                       generator=generator)
    ys[:, 0] = model.sos_eos
    ys = ys.to(device)
    prefix = ys[:, :-1]
    with torch.inference_mode():
        _, ours = model.batch_score(prefix, [None] * args.batch, None)
        _, theirs = espnet.batch_score(prefix, [None] * args.batch, None)

        def cached() -> torch.Tensor:
            return model.batch_score(ys, ours, None)[0]

        def rerun() -> torch.Tensor:
            return model.logits(ys)[:, -1].float().log_softmax(dim=-1)

        def espnet_cached() -> torch.Tensor:
            return espnet.batch_score(ys, theirs, None)[0]

        reference = rerun()
        diff = {"cached": (cached() - reference).abs().max().item(),
                "espnet": (espnet_cached() - reference).abs().max().item()}
    calls = {"rerun": rerun, "cached": cached, "espnet": espnet_cached}
    return {k: torch.inference_mode()(v) for k, v in calls.items()}, diff


def training_calls(model: TransformerLM, args: argparse.Namespace, device: torch.device
                   ) -> dict[str, Callable[[], Any]]:
    """One training update (the Trainer's order: forward, zero_grad, backward, clip, AdamW
    step; train mode) and one Taylor pass over the pruning scope, on the same batch."""
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, model.config.vocab_size - 1, (args.train_batch, args.train_tokens),
                           generator=generator)
    tokens[:, 0] = tokens[:, -1] = model.sos_eos
    batch = {"tokens": tokens.to(device),
             "lengths": torch.full((args.train_batch,), args.train_tokens, device=device)}
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=5e-4)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = Selector(model, LMPruneConfig(method="structured", sparsity=0.5)).scored
    criterion = make_criterion("taylor")

    def train_step() -> None:
        model.train()
        loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    def taylor_pass() -> None:
        score_parameters(criterion, model, names, [batch], lambda m, b: m(b)["loss"])

    return {"train": train_step, "taylor": taylor_pass}


# -- report -------------------------------------------------------------------------------------
def row(measurement: str, *, params: int | None = None, pruned: float | None = None,
        flops: int | None = None, flops_ratio: float | None = None, ms: float,
        speedup: float | None = None, measured: float | None = None, unit: str = "",
        target: str = "reference", met: bool | None = None) -> dict[str, Any]:
    """One table row (None: an empty cell; `met` None for a reference row)."""
    return {"measurement": measurement, "params": params, "block_params_pruned": pruned,
            "flops_per_token": flops, "flops_ratio": flops_ratio, "ms": ms, "speedup": speedup,
            "measured": measured, "unit": unit, "target": target, "met": met}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as one markdown table."""
    head = ("| measurement | params | block params pruned | MFLOPs/token | FLOPs ratio | ms | "
            "speed-up | measured | target | met |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        cells = [r["measurement"],
                 "" if r["params"] is None else f"{r['params']:,}",
                 ("" if r["block_params_pruned"] is None
                  else f"{100 * r['block_params_pruned']:.1f} %"),
                 "" if r["flops_per_token"] is None else f"{r['flops_per_token'] / 1e6:.4g}",
                 "" if r["flops_ratio"] is None else f"{r['flops_ratio']:.2f}x",
                 f"{r['ms']:.3f}" if r["ms"] < 10 else f"{r['ms']:.1f}",
                 "" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                 "" if r["measured"] is None else f"{r['measured']:.2f}{r['unit']}",
                 r["target"],
                 "" if r["met"] is None else ("yes" if r["met"] else "NO")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, sizes not given filled from the default or --small preset."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes and few rounds: a smoke run of a few seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    sizes = parser.add_argument_group("sizes (defaults: paper 002's LM; --small: tiny)")
    for flag, key, what in (("--layers", "layers", "blocks"), ("--d-model", "d_model", "d_model"),
                            ("--heads", "heads", "attention heads"),
                            ("--ffn", "ffn", "feed-forward units"),
                            ("--embed", "embed", "embedding size"),
                            ("--vocab", "vocab", "vocabulary size")):
        sizes.add_argument(flag, dest=key, type=int,
                           help=f"{what} (default {SIZES['default'][key]}, "
                                f"--small {SIZES['small'][key]})")
    runs = parser.add_argument_group("measurements")
    runs.add_argument("--batch", type=int, default=8, help="hypotheses decoded together")
    runs.add_argument("--context", type=int, default=50, help="tokens already in the cache")
    runs.add_argument("--steps", type=int, help="timed decoding steps per model per round")
    runs.add_argument("--rounds", type=int, help="interleaved rounds of parts 1 and 2")
    runs.add_argument("--calls", type=int, help="timed batch_score calls per round (part 2)")
    runs.add_argument("--train-batch", dest="train_batch", type=int,
                      help="sentences in the batch of part 3")
    runs.add_argument("--train-tokens", dest="train_tokens", type=int,
                      help="tokens per sentence (with <sos> and <eos>) in part 3")
    runs.add_argument("--train-rounds", dest="train_rounds", type=int,
                      help="interleaved rounds of part 3")
    runs.add_argument("--prune", type=float, nargs="+", default=[0.5, 0.75],
                      help="fractions of the block parameters pruned (default 0.5 0.75)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    preset = SIZES["small" if args.small else "default"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads < 1:
        parser.error("--threads must be 1 or more")
    for key in ("batch", "steps", "rounds", "calls", "train_batch", "train_rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be 1 or more")
    if args.context < 1 or args.train_tokens < 3:
        parser.error("--context must be 1 or more and --train-tokens 3 or more")
    if not all(0.0 < p < 1.0 for p in args.prune):
        parser.error("--prune fractions must be in (0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_freed_memory()  # see sprune.malloc
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_start = load_average()
    started = time.perf_counter()

    dense = dense_lm(args)
    dense_count = count_parameters(dense)
    models: dict[str, TransformerLM] = {"dense": dense}
    pruned_share: dict[str, float] = {"dense": 0.0}
    for fraction in args.prune:
        target = dense_count["total"] - round(fraction * dense_count["blocks"])
        for method in ("structured", "lowrank"):
            name = f"{method} {100 * fraction:g} %"
            models[name], diff = pruned_lm(dense, method, target)
            blocks = count_parameters(models[name])["blocks"]
            pruned_share[name] = 1.0 - blocks / dense_count["blocks"]
            print(f"{name}: {structure_of(models[name])}; max |masked - shrunk| log p "
                  f"{diff:.1e}")
            if not diff <= SHRINK_TOLERANCE:
                print(f"{name}: the shrunk model does not equal the masked one; not timing it")
                return 1
    for model in models.values():
        model.to(device).eval()

    latency = latency_rounds(models, args)
    scoring, score_diff = scoring_calls(dense, args, device)
    print(f"batch_score: max |log p| difference from re-running the prefix: cached "
          f"{score_diff['cached']:.1e}, ESPnet {score_diff['espnet']:.1e}")
    scoring_ms = interleaved(scoring, args.rounds, args.calls, device)
    training_ms = interleaved(training_calls(dense, args, device), args.train_rounds, 1, device)
    dense.eval()

    rows: list[dict[str, Any]] = []
    dense_ms = statistics.median(latency["dense"])
    dense_flops = flops_per_token(dense, args.context)
    for name, model in models.items():
        ms = statistics.median(latency[name])
        flops = flops_per_token(model, args.context)
        common = {"params": model.num_parameters(), "pruned": pruned_share[name],
                  "flops": flops, "flops_ratio": dense_flops / flops, "ms": ms}
        label = f"decode step, batch {args.batch}, context {args.context}: {name}"
        if name == "dense":
            rows.append(row(label, **common))
            continue
        speedup = dense_ms / ms
        efficiency = speedup / (dense_flops / flops)
        rows.append(row(label, **common, speedup=speedup, measured=efficiency,
                        target=f"speed-up / FLOPs ratio >= {LATENCY_TARGET}",
                        met=efficiency >= LATENCY_TARGET))
    score = {k: statistics.median(v) for k, v in scoring_ms.items()}
    what = f"batch_score, {args.batch} hyps, prefix {args.context}"
    rows.append(row(f"{what}: re-run the prefix (logits)", params=dense.num_parameters(),
                    ms=score["rerun"]))
    cached_speedup = score["rerun"] / score["cached"]
    rows.append(row(f"{what}: cached (sprune)", params=dense.num_parameters(), ms=score["cached"],
                    speedup=cached_speedup, measured=cached_speedup, unit="x",
                    target=f"speed-up vs re-run >= {CACHE_TARGET:g}x",
                    met=cached_speedup >= CACHE_TARGET))
    rows.append(row(f"{what}: ESPnet espnet2 TransformerLM", params=dense.num_parameters(),
                    ms=score["espnet"], speedup=score["rerun"] / score["espnet"],
                    target="reference (ESPnet's cache)"))
    train = {k: statistics.median(v) for k, v in training_ms.items()}
    what = f"dense, batch {args.train_batch} x {args.train_tokens} tokens"
    rows.append(row(f"{what}: training step (fwd + bwd + clip + AdamW)",
                    params=dense.num_parameters(), ms=train["train"]))
    taylor_ratio = train["taylor"] / train["train"]
    rows.append(row(f"{what}: Taylor pass (fwd + bwd + accumulate)",
                    params=dense.num_parameters(), ms=train["taylor"],
                    speedup=train["train"] / train["taylor"], measured=taylor_ratio, unit="x",
                    target=f"Taylor / training step <= {TAYLOR_TARGET:g}x",
                    met=taylor_ratio <= TAYLOR_TARGET))

    load_end = load_average()
    machine = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(),
               "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                          else "cpu"),
               "load_average_start": load_start, "load_average_end": load_end}
    settings = {k: getattr(args, k) for k in ("small", "device", "threads", "layers", "d_model",
                                              "heads", "ffn", "embed", "vocab", "batch",
                                              "context", "steps", "rounds", "calls",
                                              "train_batch", "train_tokens", "train_rounds",
                                              "prune")}
    print()
    print(f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs), torch "
          f"{machine['torch']}, {machine['threads']} thread(s), device {machine['device']}; "
          f"load average {load_start} at start, {load_end} at end; "
          f"{time.perf_counter() - started:.0f} s")
    print(f"LM: {args.layers} blocks, d_model {args.d_model}, {args.heads} heads, FFN "
          f"{args.ffn}, embedding {args.embed}, vocabulary {args.vocab}; ms are medians of "
          f"{args.rounds} interleaved rounds ({args.train_rounds} for training); sprune "
          f"cached batch_score is {score['espnet'] / score['cached']:.2f}x faster than ESPnet's")
    print()
    print(markdown(rows))
    if args.json:
        document = {"machine": machine, "settings": settings, "rows": rows,
                    "latency_ms": latency, "batch_score_ms": scoring_ms,
                    "training_ms": training_ms,
                    "structures": {n: structure_of(m) for n, m in models.items()},
                    "max_logp_difference": {"batch_score": score_diff}}
        atomic_write_text(args.json, json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
