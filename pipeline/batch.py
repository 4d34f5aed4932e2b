"""How many images one step takes, per process and in all, and the learning rate that follows.

`train.batch_size` is the PER-PROCESS batch (what timm and accelerate users expect): the global batch
grows with the number of processes. `train.global_batch_size` > 0 fixes the global batch instead (the
papers' recipes: 256 on any number of GPUs), split evenly over the processes; `train.batch_size` is then
not used. `train.lr` is per 256 images of the global batch either way (the linear-scaling rule).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import TrainConfig
from pipeline.errors import BadInputError

# Below this per-process batch a GPU step is bound by kernel launches and the gradient all-reduce, and
# BatchNorm's statistics come from very few images.
SMALL_CUDA_BATCH = 32


@dataclass(frozen=True)
class BatchPlan:
    per_process: int
    processes: int
    global_batch: int  # per_process * processes
    lr: float  # train.lr * global_batch / 256
    fixed_global: bool  # train.global_batch_size was set (train.batch_size is not used)


def plan_batch(train: TrainConfig, processes: int) -> BatchPlan:
    """The batch of each process and the lr, from the config and the number of processes."""
    if train.global_batch_size:
        if train.global_batch_size % processes:
            raise BadInputError(f"train.global_batch_size {train.global_batch_size} is not divisible by {processes} "
                                f"processes: use a multiple of {processes}")
        per_process = train.global_batch_size // processes
    else:
        per_process = train.batch_size
    global_batch = per_process * processes
    return BatchPlan(per_process, processes, global_batch, train.lr * global_batch / 256,
                     bool(train.global_batch_size))


def describe(plan: BatchPlan, train: TrainConfig) -> str:
    """The start-up line: per-process batch, processes, global batch and the lr they give."""
    source = (f"train.global_batch_size {plan.global_batch} split over the processes; train.batch_size "
              f"({train.batch_size}) is not used" if plan.fixed_global else "train.batch_size is per process")
    return (f"batch: {plan.per_process} per process x {plan.processes} process{'es' if plan.processes > 1 else ''} "
            f"= {plan.global_batch} global ({source}); lr {plan.lr:g} = train.lr {train.lr:g} per 256 images "
            f"x {plan.global_batch} / 256")


def small_batch_warning(plan: BatchPlan, device_type: str) -> str | None:
    """On CUDA, a per-process batch below SMALL_CUDA_BATCH starves the GPU: the warning, with the fix."""
    if device_type != "cuda" or plan.per_process >= SMALL_CUDA_BATCH:
        return None
    if plan.fixed_global:
        fix = (f"run on at most {max(1, plan.global_batch // SMALL_CUDA_BATCH)} GPUs, or set "
               f"train.global_batch_size 0 and train.batch_size {SMALL_CUDA_BATCH} or more (per process; the "
               f"global batch becomes batch_size x {plan.processes} and the lr follows it)")
    else:
        fix = f"set train.batch_size to {SMALL_CUDA_BATCH} or more (per process; the lr follows the global batch)"
    return (f"SMALL BATCH: {plan.per_process} images per process on a GPU leave it mostly idle (kernel launches "
            f"and the gradient all-reduce dominate, BatchNorm sees {plan.per_process} images): {fix}. "
            "`launch/imagenet.py --benchmark step --benchmark-batches 32,64,128,256` shows where the GPU saturates")
