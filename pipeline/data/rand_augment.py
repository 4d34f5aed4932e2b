"""Replayable RandAugment: the operations and signs of each view are pure functions of the key, drawn on
the host and handed to either library, which only applies them.

    ops, negate = rand_augment_draws(aug_seed, epoch, index, views=1, num_ops=2)   # (B, views, num_ops) each

RandAugment (Cubuk et al., 2020) applies `num_ops` operations in turn, each chosen uniformly from OPS,
at one magnitude bin `magnitude` of BINS; a signed operation's magnitude is negated with probability 1/2.
The draws: views.uniforms(aug_seed, epoch, index, view, FIRST_DRAW + 2k) picks operation k and
+ 2k + 1 its sign, continuing the views' own draw numbers (views.DRAWS), so a resume and a teacher cache
replay them and DALI's and torch's random generators are never used.

OPS are torchvision's RandAugment space in its order; the DALI graph applies DALI's implementation of
the same operation for the same index (pipeline/data/dali/rand_augment.py), with the magnitudes set to
torchvision's where DALI's defaults differ. `TorchvisionRandAugment` applies them on the torchvision
loader (PIL images), with torchvision's own operation code. Both run on the crop, before the flip.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.data.views import DRAWS, uniforms

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
BINS = 31  # magnitude bins (torchvision's and DALI's default)
FILL = 128  # grey for the pixels a geometric operation uncovers (DALI's default; torchvision's is black)
FIRST_DRAW = DRAWS


@dataclass(frozen=True)
class RandAugmentSpec:
    num_ops: int = 2
    magnitude: int = 9

    @property
    def active(self) -> bool:
        return self.num_ops > 0

    def as_dict(self) -> dict:
        return asdict(self)


def rand_augment_draws(aug_seed: int, epoch: int, index, *, views: int, num_ops: int) -> tuple[np.ndarray, np.ndarray]:
    """(operation numbers into OPS, negate flags), each (B, views, num_ops) int32."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    k = np.arange(num_ops)[None, None, :]
    key = (aug_seed, epoch, index[:, None, None], np.arange(views)[None, :, None])
    op_u, sign_u = uniforms(*key, FIRST_DRAW + 2 * k), uniforms(*key, FIRST_DRAW + 2 * k + 1)
    ops = np.minimum(np.floor(op_u * len(OPS)), len(OPS) - 1).astype(np.int32)
    return ops, (sign_u < 0.5).astype(np.int32)


class TorchvisionRandAugment:
    """Applies drawn operations to a PIL image with torchvision's RandAugment operations and magnitudes
    (bilinear, grey fill), for images of image_size x image_size."""

    def __init__(self, spec: RandAugmentSpec, image_size: int):
        from torchvision.transforms import InterpolationMode, RandAugment
        from torchvision.transforms.autoaugment import _apply_op  # torchvision's own operation code

        self.apply_op, self.interpolation, self.fill = _apply_op, InterpolationMode.BILINEAR, [FILL] * 3
        space = RandAugment(num_magnitude_bins=BINS)._augmentation_space(BINS, (image_size, image_size))
        if tuple(space) != OPS:
            raise RuntimeError(f"torchvision's RandAugment space changed: {tuple(space)}; update OPS")
        self.magnitudes = []
        for name in OPS:
            values, signed = space[name]
            self.magnitudes.append((float(values[spec.magnitude]) if values.ndim else 0.0, bool(signed)))

    def __call__(self, image, ops: np.ndarray, negate: np.ndarray):
        for op, neg in zip(ops.tolist(), negate.tolist()):
            magnitude, signed = self.magnitudes[op]
            image = self.apply_op(image, OPS[op], -magnitude if signed and neg else magnitude,
                                  interpolation=self.interpolation, fill=self.fill)
        return image
