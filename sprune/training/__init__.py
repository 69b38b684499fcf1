"""Training: one loop for every task and pruning method, on one process or many.

    config.py        TrainConfig, the `train:` section of a recipe's YAML
    callbacks.py     Callback, the hooks pruning methods use
    sampler.py       EpochBatchSampler (seeded, resumable, bucketed, sharded batches)
    state.py         seeding and the random-number snapshot of a checkpoint
    device.py        the device of a run, batches moved there
    distributed.py   torchrun's processes: process group, collectives, rank-0 writing
    run_log.py       log.jsonl, TensorBoard, the progress bar
    loop.py          Trainer: the loop, checkpoints and resume
"""
from sprune.training.callbacks import Callback
from sprune.training.config import TrainConfig
from sprune.training.device import batch_size_of, move_to_device, resolve_device
from sprune.training.loop import Trainer, param_groups
from sprune.training.sampler import EpochBatchSampler, planned_steps
from sprune.training.state import set_seed

__all__ = ["Callback", "EpochBatchSampler", "TrainConfig", "Trainer", "batch_size_of",
           "move_to_device", "param_groups", "planned_steps", "resolve_device", "set_seed"]
