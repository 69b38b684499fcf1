"""Parameters, FLOPs and latency of upstreams side by side (dense vs shrunk) in one run.

  sprune bench --upstream dense=exp/upstream --upstream shrunk=exp/prune/l0/shrunk
  sprune bench --upstream dense=DIR --upstream shrunk=DIR --threads 1 --clock cpu \\
      --json exp/bench.json --markdown exp/bench.md

Every --upstream is NAME=SPEC (SPEC: anything `load_upstream` reads: a sprune upstream dir,
a Hugging Face dir, a fairseq / torchaudio checkpoint). Each model runs on --seconds of
random 16 kHz audio. FLOPs of one forward are counted with torch.utils.flop_counter
(2 per multiply-add of matrix products, convolutions and attention; element-wise work is
not counted). Latency is the median of --repeat passes per model after --warmup passes,
under torch.inference_mode, interleaved between the models so that machine load hits all
alike; on the CPU and, when one is present, on CUDA (--device picks). The conv feature
encoder's share of FLOPs and time is shown beside the totals. Ratios are against the first
--upstream: FLOPs ratio = its FLOPs / these, speed-up = its median / this median.
"""
from __future__ import annotations

import argparse

HELP = "parameters, FLOPs and latency of upstreams side by side (dense vs shrunk)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", action="append", default=[], metavar="NAME=SPEC",
                        help="an upstream to measure (repeatable; the first is the reference)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="audio length in seconds (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="utterances per forward "
                        "(default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=9, metavar="R",
                        help="timed passes per model and device (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N",
                        help="untimed passes per model and device (default: %(default)s)")
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"), default=None,
                        help="device to time on (repeatable; default: cpu, plus cuda when "
                        "available)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch CPU threads (default 0: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (steadier on a busy "
                        "machine with --threads 1; CPU only) (default: %(default)s)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="time CUDA passes as CUDA graph replays (no CPU launch overhead; "
                        "what batch-1 GPU latency is once launches are amortised)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")


def _check(args: argparse.Namespace) -> list[str]:
    """The devices to time on; bad options are `UserError`s."""
    import torch

    from sprune.errors import UserError

    for option, value, least in (("--repeat", args.repeat, 1), ("--warmup", args.warmup, 0),
                                 ("--batch", args.batch, 1), ("--threads", args.threads, 0)):
        if value < least:
            raise UserError(f"{option} is {value}; use {least} or more")
    if not args.seconds > 0:
        raise UserError(f"--seconds is {args.seconds}; give a positive audio length")
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    devices = list(dict.fromkeys(devices))
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    if args.clock == "cpu" and "cuda" in devices:
        raise UserError("--clock cpu measures nothing useful on cuda; use --clock wall")
    if args.cuda_graphs and "cuda" not in devices:
        raise UserError("--cuda-graphs times CUDA passes; add --device cuda")
    return devices


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from sprune.benchmark import (bench_audio, compare, format_markdown, load_models, measure,
                                  to_document)
    from sprune.errors import UserError
    from sprune.io import atomic_write_text

    devices = _check(args)
    models, specs = load_models(args.upstream)
    wavs = bench_audio(args.seconds, args.batch)
    for name, model in models.items():
        if wavs.shape[1] < model.config.receptive_field:
            raise UserError(f"--seconds {args.seconds:g} is shorter than the receptive field of "
                            f"'{name}' ({model.config.receptive_field} samples); use more")
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = {"seconds": args.seconds, "batch": args.batch, "repeat": args.repeat,
                    "warmup": args.warmup, "threads": torch.get_num_threads(),
                    "clock": args.clock, "devices": devices, "torch": torch.__version__,
                    "cuda_graphs": args.cuda_graphs}
        results = measure(models, wavs, devices=devices, repeat=args.repeat,
                          warmup=args.warmup, clock=args.clock, specs=specs,
                          cuda_graphs=args.cuda_graphs)
    finally:
        torch.set_num_threads(threads_before)
    rows = compare(results)
    table = format_markdown(rows, settings)
    print(table, end="")
    if args.json:
        atomic_write_text(args.json, json.dumps(to_document(rows, settings), indent=1) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, table)
    return 0
