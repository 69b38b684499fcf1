"""Benchmark: Dynamic ASR Pathways (issue 15, paper 003), measured side by side in one process.

The script is a list of sections (`SECTIONS`); each is a function of the parsed options that
returns a `Section`: one printed markdown table and one entry of --json. A new measurement is
one more function and one more line in `SECTIONS` (--sections picks some; default all).

1. `kernels`: which torch sparse formats run the product of a weight with paper 003's 8x1
   block pattern (8 output units x 1 input column, selected by magnitude with
   `sprune.prune.select.select_mask(..., granularity="8x1")`) with a batch of tokens on this
   device, the kernel behind each, the values each stores (zero fill included) and the max
   |difference| from the dense product. A format that raises shows the first line of its error.
2. `block_sparse`: an 8x1 block-sparse linear layer against the dense one on wav2vec2-base
   sizes (Linear 768 -> 768, 768 -> 3072, 3072 -> 768; torch's default init, no bias) for
   --rows tokens (default 8 utterances x 500 frames = 4000) at --sparsity 50/70/90 %, for every
   format that ran in part 1. Dense: `F.linear(x, weight)` [rows, out]. Sparse:
   `torch.sparse.mm(W_sparse, x.T).T.contiguous()`, the layer's [rows, out] output in the
   same row-major layout (in one-off trials `F.linear(x, W_csr)`, the same MKL kernel on the
   transposed problem, was slower: 567 vs 168 ms for 3072 -> 768 at 90 % on one thread,
   though 2.7 vs 4.4 s for 3072 -> 768 at 50 %). Per shape, the dense call and every sparse
   call are timed interleaved (one untimed call each, then --rounds rounds; medians), so
   speed-up = dense ms / sparse ms is measured side by side. Correctness: max |sparse - dense
   masked| output.

3. `pathway_step`: a training step through one language's pathway (`PathwaysCallback`:
   weights outside the mask zeroed for the step, gradients masked, the other weights put
   back) against a dense step, on a CTC model over a random wav2vec2 Base upstream (target:
   at most 1.1x).
4. `adaptation`: one Dynamic ASR Pathways adaptation (every language re-selects its mask by
   magnitude among its own and the unused weights) against its round of T updates (target:
   at most 5 % of the round).

What torch 2.9.1 offers on the CPU (found with this script and gdb breakpoints in
libtorch_cpu): a sparse-compressed weight @ dense goes through
`at::native::addmm_out_sparse_compressed_cpu` to MKL's inspector-executor sparse BLAS
(`mkl_sparse_s_create_csr` / `_create_bsr`, then `mkl_sparse_s_mm`); torch has no CPU
kernel of its own for BSR. MKL takes square blocks only, so BSR with the paper's 8x1 blocks
raises "MKL Sparse doesn't support matrices with non-square blocks"; the nearest square block
holding 8x1 blocks is 8x8, which stores every 8x8 tile with any kept 8x1 block (zero-filled).
CSR runs the exact pattern (it ignores the blocks). Semi-structured 2:4 sparsity is CUDA only
(and another pattern). Targets are not asserted; the table says whether sparse is faster.

    tools/venv/bin/python bench/pathways.py [--threads 1] [--rows 4000] [--rounds 5]
        [--sparsity 0.5 0.7 0.9] [--shapes 768x768 768x3072 3072x768]
        [--sections kernels block_sparse] [--json FILE]
    tools/venv/bin/python bench/pathways.py --small      # tiny sizes: the test's smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from sprune.io import atomic_write_text
from sprune.machine import cpu_model, load_average
from sprune.malloc import keep_freed_memory
from sprune.prune.select import select_mask

BLOCK = "8x1"                # paper 003's pattern: 8 output units x 1 input column
SIZES = {"default": {"rows": 4000, "rounds": 5, "shapes": ["768x768", "768x3072", "3072x768"],
                     "step_batch": 2, "step_seconds": 4.0, "step_rounds": 5, "round_steps": 100},
         "small": {"rows": 64, "rounds": 2, "shapes": ["64x64", "64x256", "256x64"],
                   "step_batch": 2, "step_seconds": 0.5, "step_rounds": 2, "round_steps": 10}}


# -- sections -----------------------------------------------------------------------------------
@dataclass
class Column:
    """A table column: row key, header, cell text of a value (None prints empty), alignment."""

    key: str
    header: str
    cell: Callable[[Any], str] = str
    right: bool = True


@dataclass
class Section:
    """One measurement: its table (columns, rows) and lines printed above it."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(c.header for c in self.columns) + " |",
                 "|" + "|".join("---:" if c.right else "---" for c in self.columns) + "|"]
        for row in self.rows:
            cells = ["" if row.get(c.key) is None else c.cell(row[c.key]) for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def ms(value: float) -> str:
    """Milliseconds to 4 significant digits: 0.03121, 4.213, 189.4, 4254."""
    return f"{value:.4g}" if value < 1000 else f"{value:.0f}"


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def yes_no(value: bool) -> str:
    return "yes" if value else "NO"


# -- sparse formats -----------------------------------------------------------------------------
@dataclass
class Format:
    """A way to store the pruned weight [out, in] and multiply it with tokens x [rows, in]."""

    name: str
    call: str                                        # the torch call, as printed
    build: Callable[[torch.Tensor], Any]             # masked weight -> stored operand
    apply: Callable[[Any, torch.Tensor], torch.Tensor]   # (operand, x) -> y [rows, out]
    stored: Callable[[Any], int]                     # values the operand stores


def _compressed_mm(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y [rows, out] = x [rows, in] @ weight^T for a sparse-compressed weight [out, in]."""
    return torch.sparse.mm(weight, x.t()).t().contiguous()


def _semi_structured(weight: torch.Tensor) -> Any:
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(weight)


FORMATS = [
    Format(f"BSR {BLOCK}", "torch.sparse.mm(W.to_sparse_bsr((8, 1)), x.T).T.contiguous()",
           lambda w: w.to_sparse_bsr((8, 1)), _compressed_mm, lambda s: s.values().numel()),
    Format("CSR", "torch.sparse.mm(W.to_sparse_csr(), x.T).T.contiguous()",
           lambda w: w.to_sparse_csr(), _compressed_mm, lambda s: s.values().numel()),
    Format("BSR 8x8", "torch.sparse.mm(W.to_sparse_bsr((8, 8)), x.T).T.contiguous()",
           lambda w: w.to_sparse_bsr((8, 8)), _compressed_mm, lambda s: s.values().numel()),
    Format("semi-structured 2:4", "F.linear(x, to_sparse_semi_structured(W))",
           _semi_structured, lambda s, x: F.linear(x, s), lambda s: s.numel() // 2),
]


def kernel_of(fmt: Format) -> str:
    """The kernel torch 2.9 runs for `fmt` on the CPU (see the module docstring)."""
    if fmt.name.startswith(("BSR", "CSR")):
        if torch.backends.mkl.is_available():
            return f"MKL mkl_sparse_s_mm ({fmt.name})"
        return "ATen addmm_out_sparse_csr_native_cpu" if fmt.name == "CSR" else "none"
    return "CUDA only (cuSPARSELt / CUTLASS)"


def dense_kernel() -> str:
    return "MKL sgemm" if torch.backends.mkl.is_available() else "ATen CPU BLAS"


# -- shared helpers -----------------------------------------------------------------------------
def parse_shape(text: str) -> tuple[int, int]:
    """`768x3072` -> (in_features, out_features)."""
    fan_in, _, fan_out = text.lower().partition("x")
    return int(fan_in), int(fan_out)


def dense_weight(fan_in: int, fan_out: int, seed: int = 0) -> torch.Tensor:
    """A Linear(fan_in, fan_out) weight [out, in] with torch's default init."""
    torch.manual_seed(seed)
    return torch.nn.Linear(fan_in, fan_out, bias=False).weight.detach().clone()


def block_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """bool [out, in]: 8x1 blocks kept by magnitude at `sparsity`, the project's selector."""
    return select_mask({"weight": weight.abs()}, sparsity, distribution="parameter",
                       granularity=BLOCK)["weight"]


def interleaved(calls: dict[Any, Callable[[], Any]], rounds: int) -> dict[Any, list[float]]:
    """ms per call of each callable, one untimed call each first, then `rounds` rounds in
    which each is called once in turn (drifting load hits all alike)."""
    for call in calls.values():
        call()
    times: dict[Any, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(1000 * (time.perf_counter() - start))
    return times


def probe(fmt: Format) -> dict[str, Any]:
    """Run `fmt` on a Linear 64 -> 128 weight with the 8x1 pattern at 70 %, 16 tokens: does it
    run, which kernel, the share of values it stores, max |difference| from dense, the error."""
    weight = dense_weight(64, 128)
    masked = weight * block_mask(weight, 0.7)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    try:
        operand = fmt.build(masked)
        y = fmt.apply(operand, x)
    except (RuntimeError, NotImplementedError, ValueError) as error:
        return {"format": fmt.name, "call": f"`{fmt.call}`", "runs": False, "kernel": "",
                "stored": None, "max_abs_diff": None,
                "error": str(error).strip().splitlines()[0][:110]}
    return {"format": fmt.name, "call": f"`{fmt.call}`", "runs": True, "kernel": kernel_of(fmt),
            "stored": fmt.stored(operand) / masked.numel(),
            "max_abs_diff": float((y - F.linear(x, masked)).abs().max()), "error": ""}


# -- section 1: which kernels run --------------------------------------------------------------
def kernel_support(args: argparse.Namespace) -> Section:
    """`probe` of every format."""
    columns = [Column("format", "format", right=False), Column("call", "torch call", right=False),
               Column("runs", "runs on CPU", yes_no, right=False),
               Column("kernel", "kernel", right=False),
               Column("stored", "values stored", pct),
               Column("max_abs_diff", "max abs diff", lambda v: f"{v:.1e}"),
               Column("error", "error (first line)", right=False)]
    notes = [f"Weight with the {BLOCK} pattern at 70 % (Linear 64 -> 128, 16 tokens); values "
             "stored: % of the dense weight's values the format keeps (zero fill included)."]
    return Section("kernels", "Which sparse formats run an 8x1 block-sparse product",
                   columns, [probe(fmt) for fmt in FORMATS], notes)


# -- section 2: block-sparse layer vs dense ----------------------------------------------------
def block_sparse_speed(args: argparse.Namespace) -> Section:
    """Dense vs every runnable format, per shape and sparsity (see the module docstring)."""
    formats = [fmt for fmt in FORMATS if probe(fmt)["runs"]]
    rows = []
    for shape in args.shapes:
        fan_in, fan_out = parse_shape(shape)
        weight = dense_weight(fan_in, fan_out)
        torch.manual_seed(1)
        x = torch.randn(args.rows, fan_in)
        calls: dict[Any, Callable[[], Any]] = {"dense": lambda: F.linear(x, weight)}
        facts: dict[Any, dict[str, Any]] = {}
        for sparsity in args.sparsity:
            keep = block_mask(weight, sparsity)
            masked = weight * keep
            reference = F.linear(x, masked)
            for fmt in formats:
                operand = fmt.build(masked)
                diff = float((fmt.apply(operand, x) - reference).abs().max())
                key = (fmt.name, sparsity)
                calls[key] = (lambda f, o: lambda: f.apply(o, x))(fmt, operand)
                facts[key] = {"sparsity": 1.0 - float(keep.float().mean()),
                              "stored": fmt.stored(operand) / masked.numel(),
                              "max_abs_diff": diff, "kernel": kernel_of(fmt)}
        times = interleaved(calls, args.rounds)
        dense_ms = statistics.median(times["dense"])
        for (name, sparsity), fact in facts.items():
            sparse_ms = statistics.median(times[(name, sparsity)])
            rows.append({"layer": f"{fan_in} -> {fan_out}", "shape": shape, "in_features": fan_in,
                         "out_features": fan_out, "rows": args.rows,
                         "target_sparsity": sparsity, **fact, "format": name,
                         "dense_ms": dense_ms, "sparse_ms": sparse_ms,
                         "speedup": dense_ms / sparse_ms, "faster": dense_ms > sparse_ms,
                         "dense_times_ms": times["dense"],
                         "sparse_times_ms": times[(name, sparsity)]})
    order = [fmt.name for fmt in formats]
    rows.sort(key=lambda r: (args.shapes.index(r["shape"]), r["target_sparsity"],
                             order.index(r["format"])))
    columns = [Column("layer", "layer (in -> out)", right=False),
               Column("sparsity", "sparsity", pct), Column("format", "format", right=False),
               Column("kernel", "kernel", right=False), Column("stored", "values stored", pct),
               Column("dense_ms", "dense ms", ms), Column("sparse_ms", "sparse ms", ms),
               Column("speedup", "speed-up", lambda v: f"{v:.2f}x"),
               Column("faster", "sparse faster", yes_no, right=False),
               Column("max_abs_diff", "max abs diff", lambda v: f"{v:.1e}")]
    notes = [f"{args.rows} tokens x Linear(in, out), float32, no bias; {BLOCK} blocks by "
             f"magnitude per layer; dense: F.linear ({dense_kernel()}); ms: medians of "
             f"{args.rounds} interleaved rounds; speed-up = dense ms / sparse ms."]
    return Section("block_sparse", f"{BLOCK} block-sparse linear layer vs dense", columns,
                   rows, notes)


# -- training with pathways --------------------------------------------------------------------
class _Stub:
    """What `PathwaysCallback` reads of a `Trainer`: model, optimizer, batch, step counters."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer, self.evaluate_fn = model, optimizer, None
        self.batch: Any = None
        self.step = self.initial_step = 0

    def log(self, event: str, **values: Any) -> None:
        pass


def _ctc_setup(args: argparse.Namespace, seed: int = 0):
    """A CTC model on a random upstream (wav2vec2 Base, or tiny with --small), its AdamW,
    a batch of --step-batch utterances of --step-seconds and the upstream's transformer
    scope (parameter names)."""
    from sprune.tasks.ctc import CTCModel
    from sprune.upstream import UpstreamModel, preset_config, tiny_config

    torch.manual_seed(seed)
    config = tiny_config("wav2vec2") if args.small else preset_config("wav2vec2_base")
    upstream = UpstreamModel(config, freeze_feature_encoder=True)
    model = CTCModel(upstream, config.embed_dim, 32)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    samples = int(args.step_seconds * 16000)
    batch = {"wavs": torch.randn(args.step_batch, samples) * 0.1,
             "lengths": torch.full((args.step_batch,), samples, dtype=torch.long),
             "targets": torch.randint(1, 32, (args.step_batch, 20)),
             "target_lengths": torch.full((args.step_batch,), 20, dtype=torch.long),
             "lang": ["l0"] * args.step_batch}
    groups = {f"upstream.{g}": [f"upstream.{n}" for n in names]
              for g, names in upstream.parameter_groups().items()}
    scope = groups["upstream.transformer"]
    return model, optimizer, batch, scope


def _language_masks(model: torch.nn.Module, scope: list[str], languages: int,
                    sparsity: float) -> dict[str, Any]:
    """One random mask per language at `sparsity` (different seeds: partly shared weights)."""
    from sprune.prune.mask import Mask

    params = dict(model.named_parameters())
    masks = {}
    for index in range(languages):
        gen = torch.Generator().manual_seed(100 + index)
        masks[f"l{index}"] = Mask({n: torch.rand(params[n].shape, generator=gen) >= sparsity
                                   for n in scope})
    return masks


def _train_step(model, optimizer, batch) -> None:
    loss = model(batch)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _pathway_step(callback, stub: _Stub, batch: dict) -> Callable[[], None]:
    """A training step of `stub`'s model through `callback` (started here), as the Trainer
    runs it: on_step_start, forward + backward + update, on_step_end."""
    callback.on_train_start(stub)

    def step() -> None:
        stub.batch = batch
        callback.on_step_start(stub)
        _train_step(stub.model, stub.optimizer, batch)
        callback.on_step_end(stub)

    return step


def pathway_step_speed(args: argparse.Namespace) -> Section:
    """A training step through one language's pathway against a dense step (paper 003 target:
    at most 1.1x), each on its own copy of the same model."""
    from sprune.prune.methods.pathways import PathwaysCallback

    dense_model, dense_opt, batch, scope = _ctc_setup(args)
    path_model, path_opt, _, _ = _ctc_setup(args)
    masks = _language_masks(path_model, scope, args.languages, args.pathway_sparsity)
    callback = PathwaysCallback(masks, None, lambda name, found: None, None)
    stub = _Stub(path_model, path_opt)
    times = interleaved({"dense": lambda: _train_step(dense_model, dense_opt, batch),
                         "pathway": _pathway_step(callback, stub, batch)}, args.step_rounds)
    dense_ms, pathway_ms = statistics.median(times["dense"]), statistics.median(times["pathway"])
    scope_weights = sum(masks["l0"][n].numel() for n in scope)
    rows = [{"model": "tiny" if args.small else "wav2vec2 Base", "scope_weights": scope_weights,
             "batch": f"{args.step_batch} x {args.step_seconds:g} s",
             "dense_ms": dense_ms, "pathway_ms": pathway_ms, "ratio": pathway_ms / dense_ms,
             "target_met": pathway_ms / dense_ms <= 1.1,
             "dense_times_ms": times["dense"], "pathway_times_ms": times["pathway"]}]
    columns = [Column("model", "model", right=False),
               Column("scope_weights", "weights in scope", lambda v: f"{v:,}"),
               Column("batch", "batch", right=False), Column("dense_ms", "dense step ms", ms),
               Column("pathway_ms", "pathway step ms", ms),
               Column("ratio", "pathway / dense", lambda v: f"{v:.3f}x"),
               Column("target_met", "<= 1.1x", yes_no, right=False)]
    notes = [f"CTC head on a random upstream, frozen conv encoder, AdamW; forward + backward + "
             f"update. pathway: `PathwaysCallback` around the same step (zero the weights "
             f"outside the language's mask at {pct(args.pathway_sparsity)} sparsity, mask the "
             f"gradients, put the other weights back after the update); ms: medians of "
             f"{args.step_rounds} interleaved rounds."]
    return Section("pathway_step", "Training step through a language pathway vs dense",
                   columns, rows, notes)


def adaptation_cost(args: argparse.Namespace) -> Section:
    """One Dynamic ASR Pathways adaptation (every language re-selects its mask by magnitude
    among its own and the unused weights) against the round it belongs to (target: at most
    5 % of the round's time)."""
    from sprune.prune.methods import PruneConfig, PruneContext
    from sprune.prune.methods.pathways import Pathways, PathwaysCallback
    from sprune.training import TrainConfig

    model, optimizer, batch, scope = _ctc_setup(args)
    masks = _language_masks(model, scope, args.languages, args.pathway_sparsity)
    config = PruneConfig(method="pathways", sparsity=args.pathway_sparsity, scope=None,
                         include=scope, dynamic=True, round_steps=args.round_steps,
                         adapt_at=args.round_steps // 2, rounds=1)
    method = Pathways(config)
    ctx = PruneContext(build_model=lambda: model, groups={}, train_config=TrainConfig(),
                       make_trainer=None, evaluate=None, log=lambda msg: None)
    callback = PathwaysCallback(
        masks, lambda m, lang, sparsity, allowed, previous: method.make_mask(
            m, ctx, sparsity, previous=previous, allowed=allowed, language=lang),
        lambda name, found: None, None,
        (config.round_steps, config.adapt_at, [args.pathway_sparsity]))
    stub = _Stub(model, optimizer)
    step_times = interleaved({"step": _pathway_step(callback, stub, batch)},
                             args.step_rounds)["step"]
    stub.step = config.adapt_at   # the next on_step_end adapts
    start = time.perf_counter()
    callback._rounds_step(stub)
    adapt_ms = 1000 * (time.perf_counter() - start)
    step_ms = statistics.median(step_times)
    round_ms = config.round_steps * step_ms + adapt_ms
    rows = [{"model": "tiny" if args.small else "wav2vec2 Base", "languages": args.languages,
             "round_steps": config.round_steps, "step_ms": step_ms, "adapt_ms": adapt_ms,
             "round_ms": round_ms, "share": adapt_ms / round_ms,
             "target_met": adapt_ms / round_ms <= 0.05,
             "events": len(callback.events), "step_times_ms": step_times}]
    columns = [Column("model", "model", right=False), Column("languages", "languages"),
               Column("round_steps", "T (updates per round)"),
               Column("step_ms", "pathway step ms", ms), Column("adapt_ms", "adaptation ms", ms),
               Column("round_ms", "round ms", ms),
               Column("share", "adaptation share of the round", pct),
               Column("target_met", "<= 5 %", yes_no, right=False)]
    notes = [f"adaptation: `PathwaysCallback` re-selects each language's mask at "
             f"{pct(args.pathway_sparsity)} by magnitude among its own and the unused weights "
             f"(the real `Pathways.make_mask`), timed once; round = T x the median pathway step "
             f"+ the adaptation."]
    return Section("adaptation", "Adaptation step against its round", columns, rows, notes)


SECTIONS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "kernels": kernel_support,
    "block_sparse": block_sparse_speed,
    "pathway_step": pathway_step_speed,
    "adaptation": adaptation_cost,
}


# -- machine and options ------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rows", type=int,
                        help="tokens per product (default 4000 = 8 x 500 frames; --small 64)")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds (default 5)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--shapes", nargs="+", metavar="INxOUT",
                        help="Linear sizes (default 768x768 768x3072 3072x768)")
    parser.add_argument("--step-batch", type=int,
                        help="pathway_step / adaptation: utterances per step (default 2)")
    parser.add_argument("--step-seconds", type=float,
                        help="pathway_step / adaptation: seconds per utterance (default 4)")
    parser.add_argument("--step-rounds", type=int,
                        help="pathway_step / adaptation: timed steps (default 5)")
    parser.add_argument("--round-steps", type=int,
                        help="adaptation: updates T of a round (default 100)")
    parser.add_argument("--languages", type=int, default=4,
                        help="pathway_step / adaptation: languages (default 4)")
    parser.add_argument("--pathway-sparsity", type=float, default=0.5,
                        help="pathway_step / adaptation: sparsity of each pathway (default 0.5)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    for key, value in SIZES["small" if args.small else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads < 1 or args.rows < 1 or args.rounds < 1:
        parser.error("--threads, --rows and --rounds must be 1 or more")
    if not all(0.0 < s < 1.0 for s in args.sparsity):
        parser.error("--sparsity values must be in (0, 1)")
    for shape in args.shapes:
        try:
            fan_in, fan_out = parse_shape(shape)
        except ValueError:
            fan_in = fan_out = 0
        if fan_in < 1 or fan_out < 1:
            parser.error(f"--shapes '{shape}': expected INxOUT such as 768x3072")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")
    keep_freed_memory()  # see sprune.malloc
    torch.set_num_threads(args.threads)
    load_start = load_average()
    started = time.perf_counter()
    sections = [SECTIONS[name](args) for name in SECTIONS if name in args.sections]
    load_end = load_average()
    machine = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "python": platform.python_version(), "mkl": torch.backends.mkl.is_available(),
               "load_average_start": load_start, "load_average_end": load_end}
    print(f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs), torch {machine['torch']}, "
          f"{machine['threads']} thread(s); load average {load_start} at start, {load_end} at "
          f"end; {time.perf_counter() - started:.0f} s")
    for section in sections:
        print(f"\n## {section.title}\n")
        for note in section.notes:
            print(note)
        print()
        print(section.markdown())
    if args.json:
        settings = {k: getattr(args, k) for k in (
            "small", "threads", "rows", "rounds", "sparsity", "shapes", "sections", "step_batch",
            "step_seconds", "step_rounds", "round_steps", "languages", "pathway_sparsity")}
        document = {"machine": machine, "settings": settings,
                    "sections": {s.name: {"title": s.title, "rows": s.rows} for s in sections}}
        atomic_write_text(args.json, json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
