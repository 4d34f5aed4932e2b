"""RandAugment in the DALI graph with the host's draws: DALI's own operations (`nvidia.dali.auto_aug`), chosen
per sample by the operation number the feed hands over, through DALI's conditional execution.

`nvidia.dali.auto_aug.rand_augment` draws the operations and signs with DALI's random operators
(`fn.random.uniform` in `apply_rand_augment`, DALI 2.4), which a resume or a teacher cache cannot replay.
So this module builds the same thing from DALI's public parts: `get_rand_augment_suite` (the operations),
`signed_bin` (a magnitude bin with a per-sample sign given as a batch, here the feed's) and `select` (the
per-sample switch over the operations, as `apply_rand_augment` uses it), with the operation numbers and
signs of pipeline/data/rand_augment.py. The graph must be built with `enable_conditionals=True`.

The suite is arranged in rand_augment.OPS order (torchvision's), and five operations are set to
torchvision's magnitudes where DALI's defaults differ (DALI's `Augmentation.augmentation(mag_range=...)`):
  TranslateX/Y  torchvision's integer offsets int(150 / 331 * size * m / (BINS - 1)) pixels (DALI's default:
                at most 100 / 224 of the size, fractional)
  Solarize      the threshold 255 .. 0 (DALI's default 256 .. 0)
  ShearX/Y      the same magnitudes, sign reversed: DALI's `fn.transforms.shear` (forward map, about the
                origin) shears the other way than torchvision's affine for a positive magnitude (measured:
                tests/data/test_rand_augment.py), so one draw gives the same shear on both backends.
What still differs is the implementations (documented in docs/performance.md, measured per operation).
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import types
from nvidia.dali.auto_aug.core import select, signed_bin
from nvidia.dali.auto_aug.rand_augment import get_rand_augment_suite

from pipeline.data.rand_augment import BINS, FILL, OPS

DALI_NAMES = {"Identity": "identity", "ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
              "TranslateY": "translate_y", "Rotate": "rotate", "Brightness": "brightness", "Color": "color",
              "Contrast": "contrast", "Sharpness": "sharpness", "Posterize": "posterize", "Solarize": "solarize",
              "AutoContrast": "auto_contrast", "Equalize": "equalize"}
REVERSED = ("ShearX", "ShearY")  # DALI's positive magnitude shears the other way (see above)


def replayed_suite(image_size: int) -> list:
    """DALI's RandAugment operations in OPS order, with torchvision's magnitudes (see the docstring)."""
    suite = {aug.name: aug for aug in get_rand_augment_suite(use_shape=False)}
    offsets = np.trunc(np.linspace(0, 150 / 331 * image_size, BINS)).astype(np.float32)  # torchvision's int()
    out = []
    for name in OPS:
        aug = suite[DALI_NAMES[name]]
        if name in ("TranslateX", "TranslateY"):
            aug = aug.augmentation(mag_range=offsets)
        elif name == "Solarize":
            aug = aug.augmentation(mag_range=(255, 0))
        elif name in REVERSED:
            low, high = aug.mag_range
            aug = aug.augmentation(mag_range=(-low, -high))
        out.append(aug)
    return out


def apply(images, ops, negate, *, num_ops: int, magnitude: int, image_size: int):
    """images: uint8 HWC; ops, negate: per-sample int32 (num_ops,) from the feed."""
    suite = replayed_suite(image_size)
    signed = signed_bin(magnitude, random_sign=negate)
    # (DALI 2.4's suite calls its deprecated `fn.experimental` aliases of filter and equalize: DALI warns,
    # with a filter of its own that no caller's can silence)
    for k in range(num_ops):
        images = select(suite, ops[k], data=images, magnitude_bin=signed[k], num_magnitude_bins=BINS,
                        fill_value=FILL, interp_type=types.INTERP_LINEAR)
    return images
