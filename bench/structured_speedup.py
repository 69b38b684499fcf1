"""Benchmark: speed-up of a structurally pruned wav2vec2-base-size encoder (issue 6 targets).

Three models in one process: the dense wav2vec2 Base encoder (random weights, 94.4 M
parameters), `shrunk` at --keep of its parameters (default 28 %, as paper 004's
94.7 M -> 26.6 M), and `shrunk+conv`, the same transformer with the conv feature
encoder's channels pruned too (--conv-keep of the channels of conv layers 0-5; the last
layer feeds the feature projection's LayerNorm and keeps its 512).

The structure is set by masks without training, shaped like an L0 result (an assumption,
not a trained run): attention heads mostly pruned (26 of 144 kept, none in the top two
layers, whose attention blocks go entirely), kept heads with fine-grained query-key and
value-output sizes of 24 to 48 of 64 dims, and FFN units pruned more in upper layers
(layer 0 keeps 4x what layer 11 keeps; the overall FFN scale is solved so the shrunk model
has --keep of the dense parameters). The gates go through the real path: `MaskedUpstream`
with fixed log-alphas -> `shrink_masked`, and every masked model's hidden states are checked
against its shrunk model on --check-seconds of audio before any timing.

Then `sprune.benchmark` measures the three side by side (see its docstring: FLOPs with
torch.utils.flop_counter, interleaved timed passes under inference_mode) on --seconds of
audio. Reported against the issue's targets (reported, not asserted): speed-up / FLOPs ratio
of `shrunk` >= 0.85, and speed-up of `shrunk+conv` >= 2.5x on the CPU.

    tools/venv/bin/python bench/structured_speedup.py [--device cpu|cuda] [--threads 1]
        [--clock wall|cpu] [--seconds 10] [--batch 1] [--cuda-graphs] [--repeat 7]
        [--warmup 1] [--keep 0.28] [--conv-keep 0.5] [--json FILE] [--save DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

from sprune.benchmark import bench_audio, compare, format_markdown, measure, to_document
from sprune.io import atomic_write_text
from sprune.malloc import keep_freed_memory
from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import shrink_masked
from sprune.structured.sparsity import parameter_count
from sprune.structured.structures import Structures, gated_conv_layers, resolve_hierarchy
from sprune.upstream import UpstreamModel, preset_config, save_upstream
from sprune.upstream.config import UpstreamConfig

ON, OFF = 20.0, -20.0  # log-alphas whose deterministic gates are exactly 1 and 0
HEADS = [4, 4, 3, 3, 3, 2, 2, 2, 2, 1, 0, 0]                 # kept heads per layer
QK_DIMS = (24, 32, 40)                                        # cycled over a layer's heads
VO_DIMS = (32, 48)
FFN_SHAPE = [1.0 - 0.75 * i / 11 for i in range(12)]          # relative FFN size per layer
TRANSFORMER = Structures(qk_dims=True, vo_dims=True, attention_layers=True, ffn_units=True,
                         ffn_layers=True)
WITH_CONV = Structures(qk_dims=True, vo_dims=True, attention_layers=True, ffn_units=True,
                       ffn_layers=True, conv_channels=True)
TOLERANCE = 1e-4


def _subset(size: int, keep: int, generator: torch.Generator) -> Tensor:
    """A 0/1 row of `size` with `keep` ones at random positions."""
    row = torch.zeros(size, dtype=torch.bool)
    row[torch.randperm(size, generator=generator)[:keep]] = True
    return row


def gate_pattern(config: UpstreamConfig, structures: Structures, ffn_scale: float,
                 conv_keep: float, seed: int = 0) -> dict[str, Tensor]:
    """On/off per gate of `structures` (names as in `sprune.structured.structures`)."""
    generator = torch.Generator().manual_seed(seed)
    pattern: dict[str, Tensor] = {}
    for i, layer in enumerate(config.layers):
        heads, head_dim = layer.num_heads, layer.qk_dims[0]
        kept = set(torch.randperm(heads, generator=generator)[:HEADS[i]].tolist())
        qk = torch.zeros(heads, head_dim, dtype=torch.bool)
        vo = torch.zeros(heads, head_dim, dtype=torch.bool)
        for n, h in enumerate(sorted(kept)):
            qk[h] = _subset(head_dim, QK_DIMS[n % len(QK_DIMS)], generator)
            vo[h] = _subset(head_dim, VO_DIMS[n % len(VO_DIMS)], generator)
        units = round(ffn_scale * FFN_SHAPE[i] * layer.ffn_dim)
        pattern.update({f"layers.{i}.qk": qk, f"layers.{i}.vo": vo,
                        f"layers.{i}.attention": torch.tensor([bool(kept)]),
                        f"layers.{i}.ffn_units": _subset(layer.ffn_dim, units, generator),
                        f"layers.{i}.ffn": torch.tensor([units > 0])})
    if structures.conv_channels:
        for j in gated_conv_layers(config):
            channels = config.conv_layers[j][0]
            pattern[f"conv.{j}"] = _subset(channels, round(conv_keep * channels), generator)
    return pattern


def kept_fraction(config: UpstreamConfig, pattern: dict[str, Tensor], dense: int) -> float:
    masks = resolve_hierarchy(config, {k: v.float() for k, v in pattern.items()})
    return float(parameter_count(config, masks).total) / dense


def solve_ffn_scale(config: UpstreamConfig, keep: float, dense: int) -> float:
    """The FFN scale at which the transformer-only pattern keeps `keep` of the parameters."""
    low, high = 0.0, 1.0 / FFN_SHAPE[0]
    for _ in range(40):
        middle = (low + high) / 2
        if kept_fraction(config, gate_pattern(config, TRANSFORMER, middle, 1.0), dense) < keep:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def shrink_with(dense: UpstreamModel, structures: Structures, pattern: dict[str, Tensor],
                check_seconds: float) -> tuple[UpstreamModel, float]:
    """(the shrunk model of `pattern`'s gates, max |masked - shrunk| over hidden states)."""
    masked = MaskedUpstream(dense, structures).eval()
    with torch.no_grad():
        for name, alpha in masked.gates.log_alphas().items():
            alpha.copy_(torch.where(pattern[name], torch.tensor(ON), torch.tensor(OFF)))
    shrunk = shrink_masked(masked).eval()
    wavs = bench_audio(check_seconds, batch=1, seed=7)
    with torch.inference_mode():
        want = masked(wavs).hidden_states
        got = shrunk(wavs).hidden_states
    masked.remove_hooks()  # the dense model is timed without hooks
    return shrunk, max((a - b).abs().max().item() for a, b in zip(got, want))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (CPU only)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (16 kHz)")
    parser.add_argument("--batch", type=int, default=1, help="utterances per forward")
    parser.add_argument("--repeat", type=int, default=7, help="timed passes per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per model")
    parser.add_argument("--keep", type=float, default=0.28,
                        help="fraction of the dense parameters the shrunk model keeps")
    parser.add_argument("--conv-keep", type=float, default=0.5,
                        help="fraction of conv channels kept in conv layers 0-5 (shrunk+conv)")
    parser.add_argument("--check-seconds", type=float, default=1.0,
                        help="audio length of the masked == shrunk check")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="time CUDA passes as CUDA graph replays (see sprune.benchmark)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--save", metavar="DIR", help="also save the three upstreams as "
                        "DIR/{dense,shrunk,shrunk+conv} (sprune format, for `sprune bench`)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # see sprune.malloc
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.cuda_graphs and args.device != "cuda":
        parser.error("--cuda-graphs needs --device cuda")
    if args.clock == "cpu" and args.device == "cuda":
        parser.error("--clock cpu measures nothing useful on cuda; use --clock wall")
    if args.batch < 1:
        parser.error("--batch must be 1 or more")
    if not 0.1 < args.keep < 1.0 or not 0.0 < args.conv_keep <= 1.0:
        parser.error("--keep must be in (0.1, 1) and --conv-keep in (0, 1]")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    dense = UpstreamModel(preset_config("wav2vec2_base")).eval()
    config, count = dense.config, dense.num_parameters()
    scale = solve_ffn_scale(config, args.keep, count)
    models = {"dense": dense}
    for name, structures in (("shrunk", TRANSFORMER), ("shrunk+conv", WITH_CONV)):
        pattern = gate_pattern(config, structures, scale, args.conv_keep)
        models[name], diff = shrink_with(dense, structures, pattern, args.check_seconds)
        print(f"{name}: max |masked - shrunk| over all hidden states on {args.check_seconds:g} s"
              f" = {diff:.2e} (tolerance {TOLERANCE:g})")
        if not diff <= TOLERANCE:
            print(f"{name}: the shrunk model does not equal the masked one; not timing it",
                  file=sys.stderr)
            return 1
    layers = models["shrunk"].config.layers
    print("shrunk per layer, heads (qk/vo dims) | FFN units: " + "; ".join(
        f"{len(layer.kept_heads)}h ({sum(layer.qk_dims)}/{sum(layer.vo_dims)}) | "
        f"{layer.ffn_dim}" for layer in layers))
    print("shrunk+conv conv channels: "
          + ", ".join(str(c) for c, _, _ in models["shrunk+conv"].config.conv_layers))

    for name, model in models.items() if args.save else ():
        save_upstream(model, Path(args.save) / name)
    wavs = bench_audio(args.seconds, batch=args.batch)
    results = measure(models, wavs, devices=[args.device], repeat=args.repeat,
                      warmup=args.warmup, clock=args.clock, cuda_graphs=args.cuda_graphs)
    rows = compare(results)
    settings = {"seconds": args.seconds, "batch": args.batch, "repeat": args.repeat,
                "warmup": args.warmup, "threads": torch.get_num_threads(), "clock": args.clock,
                "devices": [args.device], "torch": torch.__version__, "keep": args.keep,
                "conv_keep": args.conv_keep, "cuda_graphs": args.cuda_graphs}
    print()
    print(format_markdown(rows, settings))
    shrunk, conv = rows[1], rows[2]
    efficiency = shrunk["latency"][args.device]["speedup_per_flops_ratio"]
    conv_speedup = conv["latency"][args.device]["speedup"]
    print(f"shrunk: {shrunk['parameters_ratio']:.1%} of the parameters, FLOPs ratio "
          f"{shrunk['flops_ratio']:.2f}x, speed-up {shrunk['latency'][args.device]['speedup']:.2f}x"
          f" on {args.device}: speed-up / FLOPs ratio {efficiency:.2f} (target >= 0.85: "
          f"{'met' if efficiency >= 0.85 else 'NOT met'})")
    print(f"shrunk+conv: {conv['parameters_ratio']:.1%} of the parameters, speed-up "
          f"{conv_speedup:.2f}x on {args.device} (target on cpu >= 2.5x: "
          f"{'met' if conv_speedup >= 2.5 else 'NOT met'})")
    if args.json:
        atomic_write_text(args.json, json.dumps(to_document(rows, settings), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
