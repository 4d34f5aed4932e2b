"""Consistent mixup and CutMix on the device: the batch is mixed once, before the teacher and the student
see it, so both get the same pixels; CE takes the mixed labels.

The loader hands each row its parameters (pipeline/data/mix_draws.py: `mix_lam`, `mix_box`, view-major like
the images) and places pair-mates side by side (sharding.py's pair plans), so the partner of row r is row
r ^ 1: with two views, view v of a sample mixes with view v of its mate. A row's pixels become
lerp(own, partner, w): w = 1 inside a CutMix box and 0 outside it; w = 1 - lambda everywhere for mixup;
w = 0 for a sample left unmixed (lambda = 1, no box).

CE with mixed labels and label smoothing eps (timm's `mixup_target` with `SoftTargetCrossEntropy`):
the target is lambda * smooth(y) + (1 - lambda) * smooth(y_partner), smooth(y) = (1 - eps) onehot(y) + eps / C,
and CE is linear in the target, so it is lambda CE_eps(y) + (1 - lambda) CE_eps(y_partner).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data.mix_draws import MIX_KEYS  # noqa: F401  (what a batch carries when the run mixes)


def partner_rows(x: torch.Tensor) -> torch.Tensor:
    """Row r ^ 1 of x for every row r (rows come in mate pairs)."""
    return x.unflatten(0, (-1, 2)).flip(1).flatten(0, 1)


def mix_images(images: torch.Tensor, lam: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """images (N, C, H, W), lam (N,) float, box (N, 4) int (x0, y0, x1, y1) -> the mixed images."""
    h, w = images.shape[-2:]
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    x0, y0, x1, y1 = (box[:, k].view(-1, 1, 1) for k in range(4))
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (N, H, W)
    boxed = ((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])).view(-1, 1, 1)
    outside = torch.where(boxed, 0.0, 1.0 - lam.view(-1, 1, 1).to(images.dtype))
    weight = torch.where(inside, 1.0, outside).to(images.dtype)
    return torch.lerp(images, partner_rows(images), weight.unsqueeze(1))


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor,
                        smoothing: float = 0.0) -> torch.Tensor:
    """Mean over rows of lambda CE_eps(y) + (1 - lambda) CE_eps(y of the partner row)."""
    own = F.cross_entropy(logits, labels, label_smoothing=smoothing, reduction="none")
    other = F.cross_entropy(logits, partner_rows(labels), label_smoothing=smoothing, reduction="none")
    lam = lam.to(own.dtype)
    return (lam * own + (1 - lam) * other).mean()
