"""The trained module: the student plus every method's own modules, wrapped once for DDP.

Everything with gradients (student, heads, SLKD's self-learning teachers) runs inside this one
forward, so DDP sees every parameter used in the call it wraps. The frozen teacher stays outside.
CE takes `train.label_smoothing` and, when the batch was mixed (pipeline/mixing.py), the mixed labels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods import Method, NetOutput, Outputs
from pipeline.mixing import mixed_cross_entropy
from pipeline.models import Network


class Distiller(nn.Module):
    def __init__(self, student: Network, methods: list[Method], ce_weight: float, label_smoothing: float = 0.0):
        super().__init__()
        self.student, self.label_smoothing = student, label_smoothing
        self.methods = nn.ModuleList(methods)
        overrides = [m.ce_weight for m in methods if m.ce_weight is not None]
        self.ce_weight = overrides[0] if overrides else ce_weight

    def forward(self, images: torch.Tensor, labels: torch.Tensor, teacher: NetOutput | None, views: int,
                index: torch.Tensor | None = None, mix_lam: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """images: (views * B, 3, H, W), labels: (views * B,), mix_lam: (views * B,) for a mixed batch (the
        weight of each row's own label; its partner is row r ^ 1) -> {term name: weighted loss}."""
        logits, features = self.student(images)
        out = Outputs(images=images, labels=labels, student=NetOutput(logits, features), teacher=teacher,
                      views=views, index=index)
        terms = {}
        if self.ce_weight:
            if mix_lam is None:
                ce = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
            else:
                ce = mixed_cross_entropy(logits.float(), labels, mix_lam, self.label_smoothing)
            terms["ce"] = self.ce_weight * ce
        for method in self.methods:
            new = method(out)
            if terms.keys() & new.keys():  # a silent overwrite would drop a loss term
                raise ValueError(f"method {method.name} returns loss terms {sorted(terms.keys() & new.keys())} "
                                 "that another term already returned")
            terms.update(new)
        return terms
