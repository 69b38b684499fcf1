"""The processes of one run: torchrun's environment, the process group, and the collective
operations the loop, the pruning methods and evaluation use.

Launch any training command under torchrun (PyTorch's launcher; it sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process):

    torchrun --nproc-per-node 4 -m sprune prune --config conf/prune/imp.yaml ...
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint node1:29400 --rdzv-id job42 -m sprune l0prune ...

`init_from_environment` (called once by `sprune`'s entry point) joins the process group:
NCCL for CUDA tensors and gloo for CPU tensors (both registered, `cpu:gloo,cuda:nccl`), so
a CPU run, a GPU run and CPU-side collectives all work. Without torchrun's variables every
helper here is the identity for one process; with some but not all of them set, the run
stops with one line naming the missing ones.

Conventions the rest of sprune follows: rank 0 writes files (logs, checkpoints, run
folders, results) and the other ranks write nothing (`is_main`); every process computes the
same masks from the same weights and all-reduced statistics, and `check_same` compares a
digest of them across ranks; evaluation is sharded (`my_share` of the batches) and its per-utterance
results gathered (`merge_indexed`) or its sums added (`sum_over_processes`) before the
metric is computed once, exactly as on one process.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist

from sprune.errors import SharedUserError, UserError

T = TypeVar("T")

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Where this process sits: `rank` of `world_size`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def environment_world(environ: dict[str, str] | None = None) -> World | None:
    """The world torchrun's variables describe; None when none of them is set. Some but
    not all set, or values that are not whole numbers, is a UserError naming them."""
    env = os.environ if environ is None else environ
    present = [k for k in ENVIRONMENT if k in env]
    if not present:
        return None
    missing = [k for k in ENVIRONMENT if k not in env]
    if missing:
        raise UserError(f"distributed run: {', '.join(missing)} not set (found "
                        f"{', '.join(present)}); launch with torchrun, which sets all of "
                        f"{', '.join(ENVIRONMENT)}, or unset them for a one-process run")
    try:
        rank, world_size, local_rank = (int(env[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise UserError("distributed run: RANK, WORLD_SIZE and LOCAL_RANK must be whole "
                        f"numbers, got {env['RANK']!r}, {env['WORLD_SIZE']!r}, "
                        f"{env['LOCAL_RANK']!r}") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"distributed run: RANK {rank} outside [0, WORLD_SIZE {world_size})")
    return World(rank, world_size, local_rank)


def init_from_environment(timeout_minutes: float = 30.0) -> World:
    """Join the process group torchrun describes (once; later calls return the world)."""
    world = environment_world()
    if world is None or world.world_size == 1:
        return world or World()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return world


def current() -> World:
    """This process's place (rank 0 of 1 when no process group was joined)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_distributed() -> bool:
    return current().world_size > 1


def is_main() -> bool:
    """True on the process that writes files (rank 0; the only process of a plain run)."""
    return current().is_main


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum_(tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor over the processes, in place."""
    if is_distributed():
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_(tensors: Iterable[torch.Tensor], source: int = 0) -> None:
    """Overwrite each tensor with process `source`'s, in place."""
    if is_distributed():
        for tensor in tensors:
            dist.broadcast(tensor, src=source)


def gather_objects(value: Any) -> list[Any]:
    """Every process's `value` (picklable), in rank order ([value] on one process)."""
    world = current()
    if world.world_size == 1:
        return [value]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out


def my_share(items: Sequence[T]) -> list[T]:
    """The items this process handles when work is split (every world_size-th, from its
    rank): e.g. the evaluation batches of a dev set."""
    world = current()
    return list(items[world.rank::world.world_size])


def merge_indexed(found: dict[int, T], n: int) -> list[T]:
    """Put together the results each process computed for its share of `n` items (index ->
    result): the full list, in index order, on every process. Every index must be found by
    one process."""
    if is_distributed():
        merged: dict[int, T] = {}
        for part in gather_objects(found):
            merged.update(part)
        found = merged
    missing = [i for i in range(n) if i not in found]
    if missing:
        raise RuntimeError(f"{len(missing)} of {n} results missing (first index {missing[0]})")
    return [found[i] for i in range(n)]


def sum_over_processes(values: Sequence[float]) -> list[float]:
    """Each number summed over the processes (float64; the numbers themselves on one)."""
    if not is_distributed():
        return list(values)
    totals = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return totals.tolist()


def digest(tensors: Iterable[torch.Tensor]) -> str:
    """A short hash of tensors' bytes (to compare masks or weights across processes)."""
    h = hashlib.sha1()
    for tensor in tensors:
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if tensor.numel() else b"")
    return h.hexdigest()[:16]


def check_same_tensors(tensors: Iterable[torch.Tensor], what: str) -> None:
    """Stop with one line when `tensors` (e.g. a mask just selected) are not bitwise the
    same on every process: each process selects masks itself from the same weights and
    summed statistics, and this is the check that they agree."""
    if is_distributed():
        check_same(digest(tensors), what, "the processes must select from the same weights "
                   "and statistics; report this as a bug with the command line")


def check_same(value: str, what: str, fix: str) -> None:
    """Stop every process with one line when `value` (e.g. a digest or a config's JSON)
    differs between processes."""
    values = gather_objects(value)
    if len(set(values)) > 1:
        differing = [r for r, v in enumerate(values) if v != values[0]]
        raise SharedUserError(f"distributed run: {what} differs between processes (rank 0 vs "
                        f"rank(s) {', '.join(map(str, differing))}); {fix}")
