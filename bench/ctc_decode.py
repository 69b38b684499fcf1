"""Benchmark: CTC beam search on torchaudio's flashlight decoder vs the Python prefix search.

Both decoders search the same log-probabilities, lexicon-free and without an LM, at each
--beams size: torchaudio's `CTCDecoder` (flashlight-text, C++; sprune.decode.ctc_flashlight,
what `sprune decode` / `ctc.decoder: beam` use) and the Python prefix beam search it replaced
(sprune.decode.ctc_reference, now a test reference only). The log-probabilities are a CTC
run's outputs on a data dir (--run RUN --data DIR: the model runs once, before the clock) or,
without --run, synthetic CTC-like ones (--utts utterances of --frames frames over --units
units, blank-dominated: each frame is blank with probability 0.6, else a random unit, plus
Gaussian noise on the logits; seeded). Decoders alternate for --repeat rounds; the table gives
the median seconds per round, ms per utterance, the speed-up of flashlight, and the fraction
of utterances on which both give the same best labelling. Target (issue 18): well over 10x.

    tools/venv/bin/python bench/ctc_decode.py [--beams 16 64] [--utts 32] [--threads 1]
    tools/venv/bin/python bench/ctc_decode.py --run egs/mini_minds/asr1/exp/.../dense \\
        --data egs/mini_minds/asr1/data/en-US/dev --utts 20
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from sprune.decode.ctc_flashlight import FlashlightCTCDecoder, SearchOptions
from sprune.decode.ctc_reference import prefix_beam_search


def synthetic(utts: int, frames: int, units: int, seed: int) -> list[Tensor]:
    """Blank-dominated CTC log-probs [T, V] per utterance (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(utts):
        logits = torch.randn(frames, units, generator=g) * 1.5
        peak = torch.randint(1, units, (frames,), generator=g)
        peak[torch.rand(frames, generator=g) < 0.6] = 0
        logits[torch.arange(frames), peak] += 6.0
        out.append(logits.log_softmax(-1))
    return out


def from_run(run: str, data: str, utts: int) -> tuple[list[Tensor], object]:
    """A CTC run's log-probs [T, V] on the first `utts` utterances of `data`, and its
    tokenizer."""
    from pathlib import Path

    from sprune.experiment import load_experiment
    from sprune.prune.methods.base import load_model_state
    from sprune.tasks.ctc import ctc_log_probs

    experiment = load_experiment(Path(run))
    model = experiment.build_model()
    load_model_state(model, Path(run) / "final")
    dataset = experiment.dataset(data)
    dataset = dataset.subset(dataset.utts[:utts])
    out = []
    for _, _, log_probs, frames in ctc_log_probs(model, dataset, 8, "cpu"):
        out += [lp[:int(n)].clone() for lp, n in zip(log_probs, frames)]
    return out, experiment.tokenizer


class Units:
    """A stand-in tokenizer for synthetic log-probs: units u1.., blank first."""

    def __init__(self, units: int) -> None:
        self.vocab = ["<blank>", *[f"u{i}" for i in range(1, units)]]
        self.index = {u: i for i, u in enumerate(self.vocab)}
        self.vocab_size = units

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)


def timed(fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beams", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--run", help="a CTC run folder whose outputs are decoded")
    parser.add_argument("--data", help="with --run: the data dir it decodes")
    parser.add_argument("--utts", type=int, default=32, help="utterances (default 32)")
    parser.add_argument("--frames", type=int, default=200,
                        help="synthetic: frames per utterance (default 200: 4 s at 20 ms)")
    parser.add_argument("--units", type=int, default=32, help="synthetic: units, blank "
                        "included (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        if not args.data:
            parser.error("--run needs --data")
        log_probs, tokenizer = from_run(args.run, args.data, args.utts)
        source = f"{args.run} on {args.data}"
    else:
        log_probs = synthetic(args.utts, args.frames, args.units, args.seed)
        tokenizer = Units(args.units)
        source = f"synthetic (seed {args.seed})"
    frames = sum(lp.shape[0] for lp in log_probs)
    print(f"{source}: {len(log_probs)} utterances, {frames} frames, "
          f"{log_probs[0].shape[1]} units; {args.repeat} rounds, {args.threads} thread(s)")
    print("| beam | decoder | median s | ms / utterance | speed-up | same best labelling |")
    print("|---|---|---|---|---|---|")
    for beam in args.beams:
        decoder = FlashlightCTCDecoder(tokenizer, SearchOptions(beam=beam))
        flashlight = lambda: [r.ids for lp in log_probs  # noqa: E731
                              for r in decoder.decode(lp[None])]
        python = lambda: [prefix_beam_search(lp, beam=beam)[0].labels  # noqa: E731
                          for lp in log_probs]
        times: dict[str, list[float]] = {"flashlight": [], "python": []}
        best: dict[str, list[list[int]]] = {}
        for _ in range(args.repeat):
            for name, fn in (("python", python), ("flashlight", flashlight)):
                seconds, best[name] = timed(fn)
                times[name].append(seconds)
        py, fl = statistics.median(times["python"]), statistics.median(times["flashlight"])
        same = sum(a == b for a, b in zip(best["python"], best["flashlight"]))
        for name, value in (("python prefix search", py), ("torchaudio flashlight", fl)):
            ratio = "1.00x" if value is py else f"{py / fl:.1f}x"
            print(f"| {beam} | {name} | {value:.3f} | {1000 * value / len(log_probs):.2f} | "
                  f"{ratio} | {same}/{len(log_probs)} |")


if __name__ == "__main__":
    main()
