"""Benchmark: forward latency of sprune's upstream vs torchaudio's, base size, 10 s of audio.

Both models are built in this process with the same random weights (torchaudio's, loaded
into sprune through its torchaudio loader, so both compute the same function: the table
reports the largest difference of their last hidden states). Forward passes alternate
between the two (the order flips every round so that drifting machine load hits both
alike), in eval mode under `torch.inference_mode`, after warm-up passes. Reported: the
median and minimum of --repeat timed passes per model and the ratio of the medians.
`--clock cpu` times process CPU time instead of wall time (steadier on a busy machine,
meaningful with --threads 1). Target (issue 3): sprune <= 1.1x torchaudio.

    tools/venv/bin/python bench/upstream_latency.py [--device cpu|cuda] [--threads 2]
        [--preset wav2vec2_base|hubert_base|wavlm_base] [--seconds 10] [--repeat 9]
        [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torchaudio

from sprune.malloc import keep_freed_memory
from sprune.upstream import UpstreamModel, preset_config
from sprune.upstream.keymap import convert_keys
from sprune.upstream.loaders import load_weights
from sprune.upstream.torchaudio_format import IGNORE, RULES

REFERENCES: dict[str, Callable[[], torch.nn.Module]] = {
    "wav2vec2_base": torchaudio.models.wav2vec2_base,
    "hubert_base": torchaudio.models.hubert_base,
    "wavlm_base": torchaudio.models.wavlm_base,
}


def build_pair(preset: str, device: torch.device) -> tuple[torch.nn.Module, UpstreamModel]:
    """torchaudio's model with random weights and sprune's with the same weights."""
    torch.manual_seed(0)
    reference = REFERENCES[preset]()
    ours = UpstreamModel(preset_config(preset))
    load_weights(ours, convert_keys(reference.state_dict(), RULES, IGNORE), "torchaudio")
    return reference.to(device).eval(), ours.to(device).eval()


def timed(run: Callable[[], object], device: torch.device, clock: Callable[[], float]) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--preset", choices=sorted(REFERENCES), default="wav2vec2_base")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (16 kHz)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=9, help="timed passes per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per model")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time")
    args = parser.parse_args(argv)
    keep_freed_memory()  # see sprune.malloc
    if args.clock == "cpu" and args.device == "cuda":
        parser.error("--clock cpu measures nothing useful on cuda; use --clock wall")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reference, ours = build_pair(args.preset, device)
    wavs = torch.randn(args.batch, int(args.seconds * 16000),
                       generator=torch.Generator().manual_seed(1)).mul_(0.1).to(device)

    runs = {"torchaudio": lambda: reference(wavs)[0],
            "sprune": lambda: ours(wavs).hidden_states[-1]}
    with torch.inference_mode():
        diff = (runs["torchaudio"]() - runs["sprune"]()).abs().max().item()
        for _ in range(args.warmup):
            for run in runs.values():
                run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.repeat):
            order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
            for name in order:
                times[name].append(timed(runs[name], device, clock))

    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.preset}, {args.seconds:g} s of audio x {args.batch}, device {args.device}, "
          f"threads {torch.get_num_threads()}, {args.clock} clock, {args.repeat} alternating "
          "passes each")
    print(f"{'model':<12} {'median ms':>10} {'min ms':>9}")
    for name in runs:
        print(f"{name:<12} {1000 * medians[name]:>10.1f} {1000 * min(times[name]):>9.1f}")
    ratio = medians["sprune"] / medians["torchaudio"]
    print(f"ratio sprune / torchaudio (medians): {ratio:.3f}  (target <= 1.10: "
          f"{'met' if ratio <= 1.10 else 'NOT met'})")
    print(f"max |difference| of the last hidden states: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
