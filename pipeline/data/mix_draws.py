"""Mixup and CutMix parameters of each sample, as pure functions of (aug_seed, epoch, index).

    params = mix_draws(aug_seed, epoch, index, MixSpec(mixup_alpha=0.8, cutmix_alpha=1.0), height=224, width=224)

timm's `Mixup` semantics, drawn per sample (its 'elem' mode): mixing is applied with probability
`mix_prob`; when both alphas are > 0 it is CutMix with probability `switch_prob`, else mixup (only one > 0:
that one); lambda ~ Beta(alpha, alpha) of the kind chosen. CutMix's box follows timm's `rand_bbox`: a cut
of int(H sqrt(1 - lambda)) x int(W sqrt(1 - lambda)) pixels around a uniform integer centre c (from
c - cut // 2 to c + (cut + 1) // 2), clipped to the image; lambda is then the share of the image NOT
pasted over (timm's `correct_lam`). lambda is the weight of the sample's own label (and, for mixup, of its own pixels).

The partner is not drawn here: it is the sample's pair-mate in the epoch's mate permutation (drawn from
(aug_seed, epoch), sharding.py), next to it in every batch (`train_pairs`), so the partner, lambda and box
depend on the key alone (not on train.seed) and every
process, batch size and resume (and a teacher cache) sees the same mixed image. pipeline/mixing.py
applies them on the device.

Draws: views.uniforms(aug_seed, epoch, index, MIX_STREAM, k), k = APPLY, SWITCH, CENTRE_Y, CENTRE_X, then
the Beta variate's. MIX_STREAM sits where the views' key has the view number, beyond any view count.

Beta variates: numpy and torch only sample from a generator's running state, and a generator seeded per
sample costs ~100 us (measured: 25 ms per batch of 256), so lambda = G1 / (G1 + G2) from two Gamma(alpha)
variates made from the key's uniforms: Marsaglia and Tsang's squeeze (ACM TOMS 26(3), 2000) on
Gamma(alpha + 1), up to GAMMA_TRIES tries (each accepted with probability > 0.95; all failing: < 1e-10,
then the mode is used), boosted to Gamma(alpha) by U^(1 / alpha); in logs, so a tiny alpha cannot give 0/0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from pipeline.data.views import uniforms

MIX_KEYS = ("mix_lam", "mix_box")  # the batch keys that carry them (planned.Carried)
MIX_STREAM = 1 << 20
APPLY, SWITCH, CENTRE_Y, CENTRE_X = range(4)
GAMMA_TRIES = 8
GAMMA_DRAWS = 3 * GAMMA_TRIES + 1  # per try a normal (2 uniforms) and an acceptance uniform; then the boost
BETA_FIRST = 4
DRAWS = BETA_FIRST + 2 * GAMMA_DRAWS


@dataclass(frozen=True)
class MixSpec:
    """timm's names: Beta(alpha, alpha) of mixup and of CutMix (0 = off), the probability that a sample is
    mixed at all, and the probability of CutMix when both are on."""
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5

    @property
    def active(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def as_dict(self) -> dict:
        return asdict(self)


class MixParams(NamedTuple):
    lam: np.ndarray  # (B,) float32: weight of the sample's own label (own pixels, for mixup); 1 = not mixed
    box: np.ndarray  # (B, 4) int32: x0, y0, x1, y1 of the partner's pasted box (CutMix), else all 0


def log_gamma_variates(alpha: float, u: np.ndarray) -> np.ndarray:
    """log of Gamma(alpha, 1) variates, one per row of `u` (..., GAMMA_DRAWS) uniforms in [0, 1)."""
    d = alpha + 1 - 1 / 3
    c = 1 / math.sqrt(9 * d)
    value = np.full(u.shape[:-1], d)  # the mode of Gamma(alpha + 1), kept when no try is accepted
    done = np.zeros(u.shape[:-1], dtype=bool)
    for t in range(GAMMA_TRIES):
        u1, u2, u3 = u[..., 3 * t], u[..., 3 * t + 1], u[..., 3 * t + 2]
        x = np.sqrt(-2 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)  # Box-Muller: a standard normal
        v = (1 + c * x) ** 3
        safe_v = np.where(v > 0, v, 1.0)
        accept = (v > 0) & (np.log1p(-u3) < 0.5 * x * x + d - d * safe_v + d * np.log(safe_v)) & ~done
        value = np.where(accept, d * safe_v, value)
        done |= accept
    return np.log(value) + np.log1p(-u[..., 3 * GAMMA_TRIES]) / alpha  # Gamma(alpha) = Gamma(alpha + 1) U^(1/alpha)


def symmetric_beta(alpha: float, u: np.ndarray) -> np.ndarray:
    """Beta(alpha, alpha) variates from `u` (..., 2 * GAMMA_DRAWS) uniforms."""
    g1 = log_gamma_variates(alpha, u[..., :GAMMA_DRAWS])
    g2 = log_gamma_variates(alpha, u[..., GAMMA_DRAWS:])
    return 1 / (1 + np.exp(g2 - g1))


def mix_draws(aug_seed: int, epoch: int, index, spec: MixSpec, *, height: int, width: int) -> MixParams:
    """The mixing parameters of the samples `index` (B,) at `epoch`, for images of height x width."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    u = uniforms(aug_seed, epoch, index[:, None], MIX_STREAM, np.arange(DRAWS)[None, :])  # (B, DRAWS)
    beta_u = u[:, BETA_FIRST:]
    if spec.mixup_alpha > 0 and spec.cutmix_alpha > 0:
        cut = u[:, SWITCH] < spec.switch_prob
    else:
        cut = np.full(len(index), spec.cutmix_alpha > 0)
    lam = np.ones(len(index))
    if spec.mixup_alpha > 0:
        lam = np.where(cut, lam, symmetric_beta(spec.mixup_alpha, beta_u))
    if spec.cutmix_alpha > 0:
        lam = np.where(cut, symmetric_beta(spec.cutmix_alpha, beta_u), lam)
    applied = u[:, APPLY] < spec.mix_prob
    lam = np.where(applied, lam, 1.0)
    cut &= applied

    # timm's rand_bbox (no margin): the cut around a uniform integer centre, clipped
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = (height * ratio).astype(np.int64), (width * ratio).astype(np.int64)
    cy = np.minimum(np.floor(u[:, CENTRE_Y] * height), height - 1).astype(np.int64)
    cx = np.minimum(np.floor(u[:, CENTRE_X] * width), width - 1).astype(np.int64)
    y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + (cut_h + 1) // 2, 0, height)
    x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + (cut_w + 1) // 2, 0, width)
    box = np.where(cut[:, None], np.stack([x0, y0, x1, y1], axis=1), 0)
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    lam = np.where(cut, 1 - area / (height * width), lam)
    return MixParams(lam.astype(np.float32), box.astype(np.int32))
