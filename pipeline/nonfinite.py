"""Non-finite steps, decided on the device: the update is skipped and every buffer is left as it was.

After the backward, one 0-d flag says whether any gradient is non-finite (a non-finite loss is turned into
NaN gradients by the trainer, and DDP's all-reduce carries a bad gradient to every rank, so every rank
gets the same flag without a collective of its own). The same flag is the fused SGD's `found_inf`
(weights and momentum untouched) and decides, with `torch.where`, whether the buffers the forward moved
go back to their state before the step: BatchNorm running statistics and counters (the student's, SLKD's
self-learning teachers', CCD's head), CRD's Z and draw counter, any method's buffers. Buffers too large
to copy every step (CRD's memory banks) are left to their method (`Method.large_buffers`), which keeps
the rows a step touched and puts them back in `Method.restore_if_skipped`. Nothing here reads a tensor
on the host except `NonFiniteSteps.read`, which the trainer calls at logging, checkpoint and epoch-end steps.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class BufferSnapshot:
    """The buffers of `module` (minus `exclude`, by name), copied before each step into storage made once
    (one flat tensor per dtype and device, filled with foreach copies) and put back where a step is skipped."""

    def __init__(self, module: nn.Module, exclude: set[str] = frozenset()):
        groups: dict[tuple, list[torch.Tensor]] = {}
        for name, buffer in module.named_buffers():
            if name not in exclude and buffer.numel():
                groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
        self.groups = [self._storage(buffers) for buffers in groups.values()]

    @staticmethod
    def _storage(buffers: list[torch.Tensor]) -> dict:
        def flat_views(flat):
            views, offset = [], 0
            for b in buffers:
                views.append(flat[offset:offset + b.numel()].view(b.shape))
                offset += b.numel()
            return views
        total = sum(b.numel() for b in buffers)
        saved = torch.empty(total, dtype=buffers[0].dtype, device=buffers[0].device)
        now = torch.empty_like(saved)
        return {"buffers": buffers, "saved": saved, "saved_views": flat_views(saved), "now": now,
                "now_views": flat_views(now)}

    def take(self):
        """Before the step's forward."""
        for g in self.groups:
            torch._foreach_copy_(g["saved_views"], g["buffers"])

    def restore_if(self, skipped: torch.Tensor):
        """After the flag is known: each buffer becomes its saved copy where `skipped` (a 0-d bool) is true."""
        for g in self.groups:
            torch._foreach_copy_(g["now_views"], g["buffers"])
            torch.where(skipped, g["saved"], g["now"], out=g["now"])  # a NaN that the step wrote is not blended
            torch._foreach_copy_(g["buffers"], g["now_views"])


class NonFiniteSteps:
    """The device's record of non-finite steps: [bad steps since the last read, the first one's step, its
    loss terms], and the flag of each step.

    Without `skip_nonfinite` every step after the first bad one is flagged too, until the next read stops
    the run, so nothing trains on after a step the run will stop for."""

    def __init__(self, params: list[torch.Tensor], skip_nonfinite: bool):
        self.params, self.skip_nonfinite = params, skip_nonfinite
        self.record: torch.Tensor | None = None
        self.term_names: list[str] = []

    def check(self, terms: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The 0-d bool flag of this step (on the device), recorded; `step` is its global step number."""
        grads = [p.grad for p in self.params if p.grad is not None]
        # Per-tensor 2-norms: one read of every gradient (4x faster than max |g| on CPU); a norm that
        # overflows fp32 (elements ~1e19) counts as non-finite.
        bad = ~torch.stack(torch._foreach_norm(grads)).isfinite().all()
        if self.record is None:
            self.term_names = list(terms)
            self.record = torch.zeros(2 + len(terms), dtype=torch.float64, device=bad.device)
        if not self.skip_nonfinite:
            bad = bad | (self.record[0] > 0)
        first = bad & (self.record[0] == 0)
        now = torch.cat([torch.full((1,), step, dtype=torch.float64, device=bad.device),
                         torch.stack([v.detach().to(torch.float64) for v in terms.values()])])
        self.record[1:] = torch.where(first, now, self.record[1:])
        self.record[0] += bad
        return bad

    def read(self) -> tuple[int, int, list[str]] | None:
        """(bad steps since the last read, the first one's global step, its non-finite loss terms), or None
        when there were none. A host sync: at logging, checkpoint and epoch-end steps only."""
        if self.record is None:
            return None
        count, first, *values = self.record.tolist()
        if not count:
            return None
        self.record.zero_()
        return int(count), int(first), [k for k, v in zip(self.term_names, values) if not math.isfinite(v)]

    def forget(self):
        """Start a fresh record (the loss terms may change, e.g. between benchmark passes)."""
        self.record = None
