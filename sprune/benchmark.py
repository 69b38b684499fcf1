"""Parameters, FLOPs and latency of upstreams, side by side in one process (`sprune bench`).

    models = {"dense": dense, "shrunk": shrunk}             # UpstreamModel, eval mode
    wavs = bench_audio(seconds=10.0)                         # [1, 160000]
    results = measure(models, wavs, devices=["cpu"], repeat=9, warmup=2)
    print(format_markdown(results, settings))

FLOPs (`count_flops`) are counted by `torch.utils.flop_counter.FlopCounterMode` over one
eval-mode forward: 2 FLOPs per multiply-add of matrix products (linear layers: mm / addmm /
bmm / baddbmm), convolutions (the conv feature encoder and the positional conv) and
scaled-dot-product attention (Q K^T and the weighted sum of V; heads of unequal size are
zero-padded to the layer's largest one before the fused call, and that padded work is
counted as done). Element-wise work (norms, GELU, softmax, residual adds, masking) is not
counted. torch 2.9's counter has no formula for the CPU flash-attention kernel, so
`FLOP_FORMULAS` adds the same one it uses for the CUDA kernels.

Latency (`time_models`): in eval mode under `torch.inference_mode`, after `warmup` untimed
passes per model, `repeat` timed passes per model, interleaved (the order rotates every
round, so drifting machine load hits every model alike); CUDA is synchronised before and
after each pass. The conv feature encoder's share is timed inside the same passes by hooks
on `feature_extractor`. With `cuda_graphs` each CUDA pass is the replay of a CUDA graph
captured once per model: at batch 1 an eager GPU forward of a base-size model is bound by
the CPU launching its ~230 kernels (a shrunk model launches about as many as the dense
one), and a graph times the GPU work that pruning removes. Reported: medians; ratios are against the first model.
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from sprune.errors import UserError
from sprune.upstream.model import UpstreamModel

SAMPLE_RATE = 16000
NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
FLOPS_COUNTED = ("2 FLOPs per multiply-add of matrix products, convolutions and "
                 "scaled-dot-product attention (torch.utils.flop_counter); element-wise "
                 "ops, norms and softmax not counted")


def _sdpa_flops(query_shape: Sequence[int], key_shape: Sequence[int],
                value_shape: Sequence[int], *args: Any, **kwargs: Any) -> int:
    """Q K^T and scores @ V of attention with q [B, H, Tq, E], k [B, H, Tk, E], v [B, H, Tk, Ev]."""
    batch, heads, queries, qk_dim = query_shape
    keys, vo_dim = key_shape[2], value_shape[3]
    return 2 * batch * heads * queries * keys * (qk_dim + vo_dim)


FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


# --- specs ------------------------------------------------------------------------------------
def parse_spec(text: str) -> tuple[str, str]:
    """`NAME=SPEC` -> (NAME, SPEC); a bare SPEC is named after its last path component."""
    name, sep, spec = text.partition("=")
    if not sep or "/" in name or ":" in name:
        name, spec = Path(text.rstrip("/")).name or text, text
    if not name or not spec or not NAME.match(name):
        raise UserError(f"--upstream '{text}': expected NAME=SPEC (NAME of letters, digits, "
                        "_.+-; SPEC a path load_upstream reads), e.g. dense=exp/upstream")
    return name, spec


def load_models(texts: Sequence[str]) -> tuple[dict[str, UpstreamModel], dict[str, str]]:
    """The models of `--upstream` texts, in order: (name -> model, name -> spec)."""
    from sprune.upstream.loaders import load_upstream

    if not texts:
        raise UserError("no --upstream given; pass one or more, e.g. --upstream dense=DIR "
                        "--upstream shrunk=DIR")
    models: dict[str, UpstreamModel] = {}
    specs: dict[str, str] = {}
    for text in texts:
        name, spec = parse_spec(text)
        if name in models:
            raise UserError(f"--upstream '{text}': the name '{name}' is already used; give each "
                            "upstream its own NAME=")
        try:
            models[name], _ = load_upstream(spec)
        except UserError as err:
            raise UserError(f"--upstream {name}: {err}") from None
        specs[name] = spec
    return models, specs


# --- measurements -----------------------------------------------------------------------------
def bench_audio(seconds: float = 10.0, batch: int = 1, seed: int = 1) -> Tensor:
    """Random 16 kHz audio, [batch, seconds * 16000] (what the models run on)."""
    samples = int(round(seconds * SAMPLE_RATE))
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def flop_count(run: Callable[[], object]) -> int:
    """FLOPs of calling `run()` once, as counted here (see the module docstring)."""
    with torch.inference_mode(), FlopCounterMode(display=False,
                                                 custom_mapping=FLOP_FORMULAS) as counter:
        run()
    return counter.get_total_flops()


def count_flops(model: UpstreamModel, wavs: Tensor) -> tuple[int, int]:
    """(FLOPs of one forward on `wavs` [B, T], those of the conv feature encoder)."""
    return flop_count(lambda: model(wavs)), flop_count(lambda: model.feature_extractor(wavs))


@dataclass
class Timing:
    """Seconds per timed pass: the whole forward and the conv feature encoder inside it."""

    total: list[float] = field(default_factory=list)
    conv: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.total)

    @property
    def conv_median(self) -> float:
        return statistics.median(self.conv)


class _ConvClock:
    """Forward hooks timing `feature_extractor` inside a model's forward."""

    def __init__(self, model: UpstreamModel, sync: Callable[[], None],
                 clock: Callable[[], float]) -> None:
        self.start = 0.0
        self.elapsed = 0.0
        self.sync, self.clock = sync, clock
        extractor = model.feature_extractor
        self.handles = [extractor.register_forward_pre_hook(self._begin),
                        extractor.register_forward_hook(self._end)]

    def _begin(self, *args: Any) -> None:
        self.sync()
        self.start = self.clock()

    def _end(self, *args: Any) -> None:
        self.sync()
        self.elapsed = self.clock() - self.start

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def time_models(models: Mapping[str, UpstreamModel], wavs: Tensor, *, repeat: int = 9,
                warmup: int = 2, clock: str = "wall",
                cuda_graphs: bool = False) -> dict[str, Timing]:
    """Interleaved timed forwards of every model on `wavs` (all on one device).

    With `cuda_graphs` (CUDA only) each timed pass replays a CUDA graph of the whole forward
    captured on `wavs`, so the CPU's kernel launches drop out and the GPU's own work is timed;
    the conv encoder is then timed by replaying a graph of `feature_extractor` alone in the
    same round, not inside the pass.
    """
    device = wavs.device
    if cuda_graphs and device.type != "cuda":
        raise UserError("CUDA graphs time CUDA work only; use them with --device cuda")
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    now = CLOCKS[clock]
    names = list(models)
    timings = {name: Timing() for name in names}
    with torch.inference_mode():
        if cuda_graphs:
            passes = {name: _graphed(model, wavs) for name, model in models.items()}
            conv_passes = {name: _graphed(model.feature_extractor, wavs)
                           for name, model in models.items()}
            clocks: dict[str, _ConvClock] = {}
        else:
            passes = {name: partial(model, wavs) for name, model in models.items()}
            clocks = {name: _ConvClock(model, sync, now) for name, model in models.items()}
        try:
            for _ in range(warmup):
                for name in names:
                    passes[name]()
            for round_ in range(repeat):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    sync()
                    start = now()
                    passes[name]()
                    sync()
                    timings[name].total.append(now() - start)
                    if cuda_graphs:
                        start = now()
                        conv_passes[name]()
                        sync()
                        timings[name].conv.append(now() - start)
                    else:
                        timings[name].conv.append(clocks[name].elapsed)
        finally:
            for conv_clock in clocks.values():
                conv_clock.remove()
    return timings


def _graphed(module: torch.nn.Module, wavs: Tensor) -> Callable[[], None]:
    """A replay of `module(wavs)` captured as one CUDA graph (after warm-up on a side stream,
    as CUDA graph capture requires); the captured input is `wavs` itself."""
    stream = torch.cuda.Stream(wavs.device)
    stream.wait_stream(torch.cuda.current_stream(wavs.device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            module(wavs)
    torch.cuda.current_stream(wavs.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(wavs)
    return graph.replay


@dataclass
class Result:
    """One model's parameters, FLOPs (of one forward) and timings per device."""

    name: str
    spec: str
    parameters: int
    flops: int
    conv_flops: int
    latency: dict[str, Timing] = field(default_factory=dict)


def measure(models: Mapping[str, UpstreamModel], wavs: Tensor, *, devices: Sequence[str],
            repeat: int = 9, warmup: int = 2, clock: str = "wall",
            specs: Mapping[str, str] | None = None,
            cuda_graphs: bool = False) -> list[Result]:
    """Parameters, FLOPs (counted on the first device) and latency on each device (on CUDA
    as replays of CUDA graphs when `cuda_graphs`; see `time_models`)."""
    results = []
    for name, model in models.items():
        model.eval().to(devices[0])
        flops, conv_flops = count_flops(model, wavs.to(devices[0]))
        results.append(Result(name, (specs or {}).get(name, ""), model.num_parameters(),
                              flops, conv_flops))
    for device in devices:
        on_device = {name: model.to(device) for name, model in models.items()}
        timings = time_models(on_device, wavs.to(device), repeat=repeat, warmup=warmup,
                              clock=clock, cuda_graphs=cuda_graphs and device == "cuda")
        for result in results:
            result.latency[device] = timings[result.name]
    for model in models.values():
        model.to("cpu")
    return results


# --- the table --------------------------------------------------------------------------------
def compare(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One row per model with the ratios against the first model (computed from the columns).

    parameters_ratio = params / first's (the fraction kept); flops_ratio = first's FLOPs /
    these (x fewer); per device: speedup = first's median / this median, and
    speedup_per_flops_ratio = speedup / flops_ratio (1.0: latency falls as fast as FLOPs).
    """
    first = results[0]
    rows = []
    for result in results:
        flops_ratio = first.flops / result.flops
        row: dict[str, Any] = {
            "name": result.name, "spec": result.spec, "parameters": result.parameters,
            "parameters_ratio": result.parameters / first.parameters,
            "flops": result.flops, "flops_ratio": flops_ratio,
            "conv_flops": result.conv_flops, "conv_flops_share": result.conv_flops / result.flops,
            "latency": {}}
        for device, timing in result.latency.items():
            speedup = first.latency[device].median / timing.median
            row["latency"][device] = {
                "median_ms": 1000 * timing.median, "min_ms": 1000 * min(timing.total),
                "conv_median_ms": 1000 * timing.conv_median,
                "conv_share": timing.conv_median / timing.median,
                "speedup": speedup, "speedup_per_flops_ratio": speedup / flops_ratio,
                "times_ms": [1000 * t for t in timing.total],
                "conv_times_ms": [1000 * t for t in timing.conv]}
        rows.append(row)
    return rows


def format_markdown(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> str:
    """The size table and one latency table per device, as Markdown."""
    seconds, batch = settings["seconds"], settings["batch"]
    lines = [f"Upstreams on {seconds:g} s of 16 kHz audio x {batch}; ratios against "
             f"'{rows[0]['name']}'. FLOPs: {FLOPS_COUNTED}.", "",
             "| model | parameters | kept | GFLOPs | FLOPs ratio | conv encoder FLOPs |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['parameters']:,} | {row['parameters_ratio']:.1%} "
                     f"| {row['flops'] / 1e9:.4g} | {row['flops_ratio']:.2f}x "
                     f"| {row['conv_flops_share']:.1%} |")
    for device in rows[0]["latency"]:
        how = f", threads {settings['threads']}" if device == "cpu" else ""
        graphs = device == "cuda" and settings.get("cuda_graphs", False)
        passes = ("CUDA graph replays (conv encoder: a graph of its own)" if graphs
                  else "passes")
        lines += ["", f"Latency on {device}{how}, {settings['clock']} clock: median of "
                  f"{settings['repeat']} interleaved {passes} after {settings['warmup']} "
                  "warm-up passes per model.", "",
                  "| model | median ms | min ms | conv encoder ms (share) | speed-up "
                  "| speed-up / FLOPs ratio |", "|---|---:|---:|---:|---:|---:|"]
        for row in rows:
            lat = row["latency"][device]
            lines.append(f"| {row['name']} | {lat['median_ms']:.1f} | {lat['min_ms']:.1f} "
                         f"| {lat['conv_median_ms']:.1f} ({lat['conv_share']:.0%}) "
                         f"| {lat['speedup']:.2f}x | {lat['speedup_per_flops_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def to_document(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict:
    """The JSON document `sprune bench --json` writes."""
    return {"settings": dict(settings), "flops_counted": FLOPS_COUNTED, "models": list(rows)}


