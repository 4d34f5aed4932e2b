"""Synthetic teacher outputs and a cache pass over them, without networks or loaders.

The teacher's logits for (epoch, index, view) are a fixed function of the key, so every test knows what
any record must hold and a record read from the wrong epoch, sample or view is a different one.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.teacher_cache.encode import encode_records
from pipeline.teacher_cache.manifest import Manifest, RecordSpec, write_manifest
from pipeline.teacher_cache.storage import begin, finish, open_shard

CLASSES, DIM = 10, 6


def teacher_logits(epoch: int, index: np.ndarray, view: int, classes: int = CLASSES) -> torch.Tensor:
    """(B, classes) float32: a different, unsorted row for every (epoch, index, view), with an offset
    of ~40 (so values stored without subtracting the row maximum lose fp16 precision)."""
    index = np.asarray(index, dtype=np.float64)[:, None]
    c = np.arange(classes)[None, :]
    rows = 4 * np.sin(1.7 * c * (index + 1) + 0.9 * epoch + 2.3 * view) + 40 + 0.1 * index
    return torch.from_numpy(rows.astype(np.float32))


def teacher_features(epoch: int, index: np.ndarray, view: int, dim: int = DIM) -> torch.Tensor:
    index = np.asarray(index, dtype=np.float64)[:, None]
    rows = np.cos(0.3 * np.arange(dim)[None, :] * (index + 2) + epoch - view)
    return torch.from_numpy(rows.astype(np.float32))


def view_major(per_view: list[torch.Tensor]) -> torch.Tensor:
    """[view 0 (B, ...), view 1 (B, ...)] -> (views * B, ...): the loaders' batch layout."""
    return torch.cat(per_view)


def plan(num_samples: int, batch: int, rank: int, world: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cache pass's plan for one rank: samples rank, rank + world, ..., padded to whole batches
    (padding reads sample `rank`, marked invalid)."""
    mine = np.arange(rank, num_samples, world)
    steps = -(-len(mine) // batch)
    padded = np.full(steps * batch, rank, dtype=np.int64)
    padded[: len(mine)] = mine
    valid = np.arange(steps * batch) < len(mine)
    return [(padded[s * batch:(s + 1) * batch], valid[s * batch:(s + 1) * batch]) for s in range(steps)]


def batch_records(spec: RecordSpec, epoch: int, index: np.ndarray) -> np.ndarray:
    """The records the cache pass writes for one batch: the synthetic teacher on every view."""
    logits = view_major([teacher_logits(epoch, index, v, spec.num_classes) for v in range(spec.views)])
    features = (view_major([teacher_features(epoch, index, v, spec.feature_dim) for v in range(spec.views)])
                if spec.feature_dim else None)
    return encode_records(logits, features, spec.views, spec.topk, spec.temperatures)


def make_manifest(samples=23, epochs=2, world=3, views=2, topk=3, classes=CLASSES, temperatures=(1.0, 4.0),
                  feature_dim=DIM, batch_size=4, **made_from) -> Manifest:
    spec = RecordSpec.create(views, topk, classes, temperatures, feature_dim)
    identity = {"teacher.arch": "resnet10t", "teacher weights": "sha256:00000000000000aa",
                "teacher input mean": [0.485, 0.456, 0.406], "teacher input std": [0.229, 0.224, 0.225],
                "train listing": f"{samples} samples, {classes} classes, sha256:00000000000000bb",
                "data.aug_seed": 0, "data.image_size": 16, "data.min_area": 0.08, **made_from}
    return Manifest(made_from=identity, record=spec, epochs=epochs, samples=samples, world=world,
                    batch_size=batch_size)


def write_cache(root, manifest: Manifest, teacher_val=None) -> Manifest:
    """A whole cache pass, every rank in turn, in this process."""
    manifest = begin(root, manifest)
    write_manifest(root, manifest)
    for epoch in range(manifest.epochs):
        for rank in range(manifest.world):
            shard = open_shard(root, manifest, epoch, rank, sync_every_s=0)
            if shard is None:
                continue
            for index, valid in plan(manifest.samples, manifest.batch_size, rank, manifest.world)[shard.start_step:]:
                shard.write(index, valid, batch_records(manifest.record, epoch, index))
            shard.finish()
            shard.close()
    return finish(root, manifest, teacher_val or {"top1": 50.0, "top5": 90.0, "images": 20})
