"""Benchmark: PARP's training-step overhead against the same loop without pruning.

Both arms run the one `Trainer` on the intent task (random 16 kHz audio, an UpstreamModel of
--size) for --steps updates; the PARP arm adds the re-prune callback (global magnitude over
the transformer's linear weights at --sparsity, every --every updates, plus the final one).
Arms alternate for --repeat rounds; the table gives the median seconds per update and the
overhead. Target (issue 4): at most 5 % with re-pruning every 50 updates.

    tools/venv/bin/python bench/parp_overhead.py [--size small] [--steps 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sprune.data.dataset import collate_audio
from sprune.malloc import keep_freed_memory
from sprune.prune.criteria import Magnitude
from sprune.prune.methods.callbacks import RepruneCallback
from sprune.prune.scope import resolve_scope
from sprune.prune.select import select_mask
from sprune.tasks.intent import IntentClassifier
from sprune.training import TrainConfig, Trainer
from sprune.upstream import UpstreamModel, preset_config, tiny_config

SIZES = {
    "tiny": lambda: tiny_config("hubert"),
    "small": lambda: tiny_config("hubert", conv_channels=128, embed_dim=256, num_layers=4,
                                 num_heads=4, ffn_dim=1024, pos_conv_kernel=32,
                                 pos_conv_groups=8),
    "base": lambda: preset_config("wav2vec2_base"),
}


class RandomAudio(Dataset):
    def __init__(self, n: int, seconds: float) -> None:
        gen = torch.Generator().manual_seed(0)
        self.wavs = [0.1 * torch.randn(int(seconds * 16000), generator=gen) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, i: int) -> dict:
        return {"wav": self.wavs[i], "intent": i % 14}


def run_arm(size: str, steps: int, batch: int, seconds: float, parp: bool, every: int,
            sparsity: float, device: str) -> float:
    torch.manual_seed(0)
    upstream = UpstreamModel(SIZES[size](), freeze_feature_encoder=True)
    model = IntentClassifier(upstream, upstream.config.embed_dim, 14)
    groups = {g: [f"upstream.{p}" for p in ps] for g, ps in upstream.parameter_groups().items()}
    names = resolve_scope(model, groups=groups)

    def make_mask(m, s):
        params = dict(m.named_parameters())
        return select_mask(Magnitude().scores({n: params[n] for n in names}), s)

    callbacks = []
    if parp:
        callbacks.append(RepruneCallback(make_mask(model, sparsity), every,
                                         lambda step, total: sparsity, make_mask))
    config = TrainConfig(max_steps=steps, batch_size=batch, eval_every=10 ** 9,
                         save_every=10 ** 9, log_every=10 ** 9, device=device)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, RandomAudio(batch * 4, seconds), collate_audio, config,
                          Path(out), callbacks=callbacks, show_progress=False)
        trainer.save_checkpoint = lambda: None   # time the updates, not the disk
        start = time.perf_counter()
        trainer.fit()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per utterance")
    parser.add_argument("--every", type=int, default=50, help="updates between re-prunes")
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    keep_freed_memory()  # see sprune.malloc
    if args.threads:
        torch.set_num_threads(args.threads)
    plain, parp = [], []
    for _ in range(args.repeat):
        plain.append(run_arm(args.size, args.steps, args.batch, args.seconds, False,
                             args.every, args.sparsity, args.device))
        parp.append(run_arm(args.size, args.steps, args.batch, args.seconds, True,
                            args.every, args.sparsity, args.device))
    p, q = statistics.median(plain), statistics.median(parp)
    print(f"size={args.size} steps={args.steps} batch={args.batch}x{args.seconds}s "
          f"re-prune every {args.every} at {args.sparsity} on {args.device}, "
          f"threads={torch.get_num_threads()}, {args.repeat} alternating rounds")
    print(f"| loop | median s/update | all rounds |")
    print(f"|---|---|---|")
    print(f"| no pruning | {p:.4f} | {', '.join(f'{v:.4f}' for v in plain)} |")
    print(f"| PARP | {q:.4f} | {', '.join(f'{v:.4f}' for v in parp)} |")
    print(f"PARP overhead: {100 * (q / p - 1):+.1f} % (target <= 5 %)")


if __name__ == "__main__":
    main()
