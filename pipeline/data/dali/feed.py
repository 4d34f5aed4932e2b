"""The external source: each call hands DALI the next step of the loader's plan, for every format.

Per step it returns, in this order (`Feed.outputs`):
  encoded   folder / filelist: each sample's file name as uint8 bytes (`fn.io.file.read` reads the file in
            DALI's threads); webdataset: the image member itself, a view into the memory-mapped tar found
            through the DALI index files (DALI copies it; no tar is scanned)
  index     (B,) int64 dataset indices
  per view  train, one view, ROI decode: the window's (x, y) and (w, h), int32, for `fn.decoders.image_slice`;
            train, whole-image decode: its (y, x) and (y + h, x + w), float32, for `fn.resize`'s ROI;
            then the flip, int32 (`mirror`)
  RandAugment train with RandAugment on, per view: the operation numbers and negate flags, int32 (num_ops,)
            per sample (rand_augment.py)
  extras    per attached key, per view: that view's (B, ...) slice
"""
from __future__ import annotations

import numpy as np

from pipeline.data.folder import FolderListing
from pipeline.data.views import Views
from pipeline.data.webdataset import Shards


class Feed:
    """A one-argument callable (DALI's batch_info form) over `plan` from step `fed` to `limit`: DALI runs
    it up to its prefetch depth ahead of the consumer, and it ends the stream (StopIteration) at `limit`."""

    def __init__(self, outputs):
        self.outputs = outputs  # (index (B,) int64, epoch) -> the step's list of outputs
        self.plan = np.zeros((0, 0), dtype=np.int64)
        self.epoch = self.fed = self.limit = 0

    def point(self, plan: np.ndarray, epoch: int, start: int):
        self.plan, self.epoch, self.fed, self.limit = plan, epoch, start, len(plan)

    def __call__(self, batch_info):
        if self.fed >= self.limit:
            raise StopIteration
        index = np.ascontiguousarray(self.plan[self.fed], dtype=np.int64)
        self.fed += 1
        return self.outputs(index, self.epoch)


def encoded(source: FolderListing | Shards, position: np.ndarray, paths: np.ndarray | None) -> list[np.ndarray]:
    """The encoded-image output for the samples at `position` (see the module docstring)."""
    if isinstance(source, Shards):
        return [source.member(p) for p in position.tolist()]
    return [np.frombuffer(p.encode(), dtype=np.uint8) for p in paths[position].tolist()]


def window_args(params: Views, roi_decode: bool) -> list[np.ndarray]:
    """Per view: the window as the DALI operator that cuts it takes it, then the flip."""
    out = []
    for v in range(params.windows.shape[1]):
        x, y, w, h = (np.ascontiguousarray(params.windows[:, v, k]) for k in range(4))
        if roi_decode:  # image_slice: start and shape in its default "WH" axis order
            out += [np.stack([x, y], 1).astype(np.int32), np.stack([w, h], 1).astype(np.int32)]
        else:  # resize: roi_start / roi_end in the image's (H, W) order, absolute pixels
            out += [np.stack([y, x], 1).astype(np.float32), np.stack([y + h, x + w], 1).astype(np.float32)]
        out.append(params.flips[:, v].astype(np.int32))
    return out


def rand_augment_args(draws: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Per view: the (B, num_ops) operation numbers, then the negate flags."""
    ops, negate = draws
    return [np.ascontiguousarray(a[:, v]) for v in range(ops.shape[1]) for a in (ops, negate)]


def extra_args(extras: dict[str, np.ndarray], keys: list[str], views: int) -> list[np.ndarray]:
    """Per key (in `keys` order), per view: a contiguous (B, ...) array."""
    return [np.ascontiguousarray(extras[key][:, v]) for key in keys for v in range(views)]
