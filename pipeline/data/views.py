"""Replayable views: the crop window and flip of view v of dataset index i at epoch e, as a pure function.

    windows, flips = view_windows(aug_seed, epoch, index, heights, widths, views=2, min_area=0.08)

Every number comes from a counter-based draw: a 64-bit hash (SplitMix64's finaliser, chained over the
key fields) of (aug_seed, epoch, index, view, draw number), turned into a double in [0, 1). Nothing is a
generator's running state, so a view depends on its key alone: not on the batch it is in, the rank or
the number of ranks, the worker that decodes it, or where a run was resumed. Both loaders, the teacher
cache and mixup import this one function.

The draw follows torchvision's `RandomResizedCrop.get_params` (on the image's stored width and height):
up to 10 tries of an area fraction uniform in [min_area, 1] times H*W and an aspect ratio log-uniform in
[3/4, 4/3], w = round(sqrt(area * ratio)), h = round(sqrt(area / ratio)) (round half to even, as
Python's round); the first try with 0 < w <= W and 0 < h <= H wins and its top/left are uniform integers
in [0, H - h] / [0, W - w]. When no try fits, torchvision's fallback: the aspect ratio clamped to the
range, the largest such window, centred. Then a horizontal flip with probability 1/2.

Draw numbers per (key, view): try t uses 2t (area) and 2t + 1 (aspect), then TOP, LEFT and FLIP.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

TRIES = 10
TOP, LEFT, FLIP = 2 * TRIES, 2 * TRIES + 1, 2 * TRIES + 2
DRAWS = FLIP + 1  # uniforms per (aug_seed, epoch, index, view)
# The replayed draws' layout (this file, rand_augment.py, mix_draws.py, sharding.py's mates). A teacher cache
# records it and a run compares it: bump it whenever any of them would cut, augment or mix other images.
DRAWS_VERSION = 1
ASPECT = (3 / 4, 4 / 3)

_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


class Views(NamedTuple):
    windows: np.ndarray  # (B, views, 4) int64: x (left), y (top), w, h in pixels of the stored image
    flips: np.ndarray  # (B, views) bool: flip horizontally after the crop


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 in which every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniforms(*key) -> np.ndarray:
    """Doubles in [0, 1), one per element of the broadcast key fields (non-negative integers):
    a hash of the whole key, so each field changes every draw."""
    fields = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in key])
    if any((f < 0).any() for f in fields):
        raise ValueError("view keys are non-negative integers")
    shape = fields[0].shape
    h = np.full(fields[0].size, _GOLDEN, dtype=np.uint64)  # 1-d arrays: numpy wraps uint64 arrays silently
    for n, field in enumerate(fields, 1):  # the field's position is in the hash: (a, b) and (b, a) differ
        offset = np.uint64(_GOLDEN * n % 2 ** 64)
        h = _mix(h ^ _mix(field.reshape(-1).astype(np.uint64) + offset))
    return ((h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(shape)


def view_windows(aug_seed: int, epoch: int, index, heights, widths, *, views: int, min_area: float,
                 aspect: tuple[float, float] = ASPECT) -> Views:
    """Crop windows and flips of `views` views of the samples `index` (B,) whose stored images are
    `heights` x `widths` (B,), at `epoch`: see the module docstring."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    H = np.asarray(heights, dtype=np.int64).reshape(-1, 1)  # (B, 1): broadcasts over the views
    W = np.asarray(widths, dtype=np.int64).reshape(-1, 1)
    if (H <= 0).any() or (W <= 0).any():
        raise ValueError("image sizes must be positive")
    u = uniforms(aug_seed, epoch, index[:, None, None], np.arange(views)[None, :, None],
                 np.arange(DRAWS)[None, None, :])  # (B, views, DRAWS)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    area = (H * W)[..., None] * (min_area + (1.0 - min_area) * u[..., 0:2 * TRIES:2])  # (B, views, TRIES)
    ratio = np.exp(log_lo + (log_hi - log_lo) * u[..., 1:2 * TRIES:2])
    w = np.rint(np.sqrt(area * ratio)).astype(np.int64)
    h = np.rint(np.sqrt(area / ratio)).astype(np.int64)
    fits = (w > 0) & (w <= W[..., None]) & (h > 0) & (h <= H[..., None])
    first = fits.argmax(axis=-1)[..., None]  # the first try that fits (0 when none does: see below)
    w = np.take_along_axis(w, first, -1)[..., 0]
    h = np.take_along_axis(h, first, -1)[..., 0]
    top = np.minimum(np.floor(u[..., TOP] * (H - h + 1)), H - h).astype(np.int64)
    left = np.minimum(np.floor(u[..., LEFT] * (W - w + 1)), W - w).astype(np.int64)

    # torchvision's fallback when no try fits: the widest window of the clamped aspect, centred
    in_ratio = W / H
    fw = np.where(in_ratio > aspect[1], np.rint(H * aspect[1]), W).astype(np.int64)
    fh = np.where(in_ratio < aspect[0], np.rint(W / aspect[0]), H).astype(np.int64)
    fw, fh = np.broadcast_to(fw, w.shape), np.broadcast_to(fh, h.shape)
    found = fits.any(axis=-1)
    w, h = np.where(found, w, fw), np.where(found, h, fh)
    top = np.where(found, top, (H - h) // 2)
    left = np.where(found, left, (W - w) // 2)
    return Views(np.stack([left, top, w, h], axis=-1), u[..., FLIP] < 0.5)
