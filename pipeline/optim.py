"""The optimizer and its schedule, from the config: fused momentum SGD with weight decay by parameter kind,
and timm's step or cosine schedule with warm-up, stepped per update."""
from __future__ import annotations

import timm.optim
import torch
from timm.scheduler import create_scheduler_v2

from pipeline.config import TrainConfig
from pipeline.distiller import Distiller


def create_optimizer(model: Distiller, train: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """`lr`: the global batch's (pipeline/batch.py). No weight decay on biases, norm layers (1-d) and
    method scalars such as ICD's tau and b.

    Fused (one kernel per step on CUDA and CPU), and it takes `found_inf`: a non-finite step is skipped on
    the device. Momentum buffers start at zero (the same first update as torch's lazily cloned ones):
    torch's fused kernel leaves a lazily created buffer unwritten when the very first step is skipped."""
    no_decay = {f"methods.{i}.{n}" for i, m in enumerate(model.methods) for n in m.no_weight_decay()}
    groups = timm.optim.param_groups_weight_decay(model, train.weight_decay, no_weight_decay_list=no_decay)
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=train.momentum, fused=True)
    for group in groups:
        for p in group["params"]:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


def create_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int):
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="multistep" if train.sched == "step" else "cosine", num_epochs=train.epochs,
        decay_milestones=train.decay_epochs, decay_rate=train.decay_rate, warmup_epochs=train.warmup_epochs,
        warmup_lr=train.warmup_lr, min_lr=train.min_lr, step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    scheduler.step_update(0)
    return scheduler
