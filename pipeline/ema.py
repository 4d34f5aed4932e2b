"""A moving average of the student's weights: timm's `ModelEmaV3`, updated after each optimizer step on
the device, left untouched by a skipped step.

timm's update lerps every floating-point entry of the state dict (weights and BatchNorm statistics) toward
the student's by 1 - decay and copies the integer ones. Here the lerp weight is a device tensor,
(1 - decay) x (step not skipped), so a skipped step (pipeline/nonfinite.py's flag, the same on every rank)
moves nothing without the host reading the flag; the integer entries are copied from the student, whose
buffers a skipped step has already put back. The decay (and timm's warm-up, `ema.warmup`) comes from
timm's `get_decay` on the global step, a host counter: the same in a resumed run.

Checkpoints: registered with accelerate (its state dict, exact floats), so a resume continues it exactly.
With several processes every rank keeps its own copy; the weights agree (DDP keeps the students equal)
and the BatchNorm statistics are averaged with the student's before each evaluation and checkpoint.
"""
from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


class StudentEma(ModelEmaV3):
    def __init__(self, student: nn.Module, decay: float, warmup: bool):
        super().__init__(student, decay=decay, use_warmup=warmup)
        self.requires_grad_(False)
        self._pairs: list[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []

    def _entries(self, student: nn.Module):
        """(averaged, student's) floating-point entries and (copied, student's) integer ones, listed once."""
        if not self._pairs:
            mine, theirs = self.module.state_dict(keep_vars=True), student.state_dict(keep_vars=True)
            floats = [k for k, v in mine.items() if v.is_floating_point()]
            others = [k for k in mine if k not in floats]
            self._pairs = [([mine[k].data for k in floats], [theirs[k].data for k in floats],
                            [mine[k].data for k in others], [theirs[k].data for k in others])]
        return self._pairs[0]

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, skipped: torch.Tensor | None = None):
        """After the optimizer step `step` (1-based, the global step); `skipped`: the step's 0-d bool flag."""
        ema_floats, student_floats, ema_others, student_others = self._entries(student)
        weight = 1.0 - self.get_decay(step)
        if skipped is not None:  # made on the device from the flag: neither read nor copied by the host
            weight = torch.where(skipped, 0.0, torch.full((), weight, dtype=ema_floats[0].dtype, device=skipped.device))
        diffs = torch._foreach_sub(student_floats, ema_floats)
        torch._foreach_mul_(diffs, weight)
        torch._foreach_add_(ema_floats, diffs)
        if ema_others:
            torch._foreach_copy_(ema_others, student_others)
