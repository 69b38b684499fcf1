"""Which examples each update sees: seeded, resumable, length-bucketed, sharded batches."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from sprune.training.config import TrainConfig


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of a seeded permutation per epoch, restartable at any batch.

    The order depends only on (seed, epoch), so a resumed run sees the same batches. With
    `lengths` (one per example), each run of `bucket_batches` consecutive batches of the
    permutation is sorted by length before it is cut into batches, and the batches are then
    shuffled: batches hold utterances of similar length (less padding, the usual bucketing of
    speech toolkits) while their order and make-up still change every epoch. With `groups`
    (a label per example, e.g. its language) every batch holds one group's examples only
    (monolingual batches), the groups' batches shuffled together.

    Sharding (`rank` of `world_size` processes): `batch_size` is the global batch. The
    global batches are the same for every process count, and process r takes examples
    r, r + world_size, ... of each (`global_batch[r::world_size]`), so N processes x batch
    B/N see exactly the examples of one process x batch B, and a run resumes at any process
    count. A global batch smaller than the process count (an epoch's or a group's last)
    leaves some shards empty: such a process gets the batch's first example again as a
    stand-in, and `shard_weight` is 0 for it (the Trainer scales its loss to nothing).
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, lengths: Sequence[int] | None = None,
                 bucket_batches: int = 16, groups: Sequence[str] | None = None) -> None:
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} examples")
        if groups is not None and len(groups) != n:
            raise ValueError(f"{len(groups)} group labels for {n} examples")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.lengths, self.bucket_batches = lengths, bucket_batches
        self.groups = list(groups) if groups is not None else None
        self.epoch, self.start_batch = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        if self.groups is not None:
            return sum(math.ceil(self.groups.count(g) / self.batch_size)
                       for g in set(self.groups))
        return math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def global_batches(self) -> list[list[int]]:
        """Every global batch of the current epoch, in order (the same on every process)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist() if self.shuffle else list(range(self.n))
        if self.groups is None and self.lengths is None:
            size = self.batch_size
            batches = [order[b * size:(b + 1) * size] for b in range(self.batches_per_epoch())]
        else:
            if self.groups is None:
                batches = self._cut(order)
            else:
                batches = [batch for g in sorted(set(self.groups))
                           for batch in self._cut([i for i in order if self.groups[i] == g])]
            if self.shuffle:
                batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        self._cache = (self.epoch, batches)
        return batches

    def shard(self, batch: Sequence[int]) -> list[int]:
        """This process's examples of a global batch (the first example as a stand-in when
        the shard is empty; see `shard_weight`)."""
        mine = list(batch[self.rank::self.world_size])
        return mine or [batch[0]]

    def shard_weight(self, index: int) -> float:
        """The share of global batch `index` of the current epoch this process holds:
        its examples / the batch's examples (0 for a stand-in shard)."""
        batch = self.global_batches()[index]
        return len(batch[self.rank::self.world_size]) / len(batch)

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch for this process, in order."""
        return [self.shard(batch) for batch in self.global_batches()]

    def _cut(self, order: list[int]) -> list[list[int]]:
        """`order` cut into batches (length-bucketed when lengths are known)."""
        size = self.batch_size
        if self.lengths is None:
            return [order[b:b + size] for b in range(0, len(order), size)]
        chunk = size * self.bucket_batches
        batches = []
        for start in range(0, len(order), chunk):
            bucket = sorted(order[start:start + chunk], key=lambda i: self.lengths[i])
            batches += [bucket[b:b + size] for b in range(0, len(bucket), size)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.start_batch:]


def planned_steps(config: TrainConfig, num_examples: int) -> int:
    """Updates a `Trainer` with `config` makes over `num_examples` training examples:
    `max_steps` when set, else `epochs` passes (at least one update)."""
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = EpochBatchSampler(num_examples, config.batch_size, config.seed).batches_per_epoch()
    return max(1, round(config.epochs * per_epoch))
