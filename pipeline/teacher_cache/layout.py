"""The record layout of a teacher cache, where each record lives, and what a cache costs on disk.

One record per (epoch, sample, view), a packed numpy structured dtype (fields in this order, so every
field is aligned to its own size):

  tail      float32 x T   log sum over the classes outside the top K of exp((y_j - y_max) / T), one per
                          stored temperature; absent when K = classes (nothing is left out: the record then
                          serves every temperature)
  classes   int16 x K     the top-K class indices, largest logit first (int32 when classes > 32767)
  values    float16 x K   the top-K logits minus the row's maximum (values[0] = 0): relative values keep
                          fp16's 11-bit precision where it matters, near the maximum, whatever the offset
  features  float16 x d   the pooled pre-logit features, when the cache stores them

A shard holds one epoch's records of the samples one writer rank handled, as a (samples, views) array of
records with no header (the manifest is the header). Samples go to shards by `index % world` (the cache
pass's plan gives rank r the samples r, r + world, ...; `world` is the writer's, kept in the manifest), at
row `index // world`. So a record's byte offset in its shard is ((index // world) * views + view) * record
bytes: memory-mapped, addressed by index, no index file, readable by a run on any number of processes.
"""
from __future__ import annotations

import numpy as np

INT16_CLASSES = 32767  # up to this many classes the indices are int16
EXTRA_KEYS = {"tail": "teacher_tail", "classes": "teacher_classes", "values": "teacher_values",
              "features": "teacher_features"}  # record field -> the name it travels under in a batch


def record_dtype(topk: int, num_classes: int, num_temperatures: int, feature_dim: int) -> np.dtype:
    """The packed dtype of one record (see the module docstring)."""
    if not 1 <= topk <= num_classes:
        raise ValueError(f"top-K must be in 1..{num_classes} (the number of classes), got {topk}")
    fields = []
    if topk < num_classes and num_temperatures:
        fields.append(("tail", "<f4", (num_temperatures,)))
    fields.append(("classes", "<i2" if num_classes <= INT16_CLASSES else "<i4", (topk,)))
    fields.append(("values", "<f2", (topk,)))
    if feature_dim:
        fields.append(("features", "<f2", (feature_dim,)))
    return np.dtype(fields)


def stored_temperatures(topk: int, num_classes: int, temperatures) -> list[float]:
    """The temperatures whose tail mass a record keeps: none when K = classes (the record is exact)."""
    return sorted({float(t) for t in temperatures}) if topk < num_classes else []


def record_bytes(topk: int, num_classes: int, temperatures, feature_dim: int) -> int:
    return record_dtype(topk, num_classes, len(stored_temperatures(topk, num_classes, temperatures)),
                        feature_dim).itemsize


def shard_of(index: np.ndarray, world: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices -> (writer rank whose shard holds each, its row in that shard)."""
    index = np.asarray(index, dtype=np.int64)
    return index % world, index // world


def shard_rows(num_samples: int, rank: int, world: int) -> int:
    """Rows of rank `rank`'s shard: the samples rank, rank + world, ... below num_samples."""
    return max(0, -(-(num_samples - rank) // world))


def shard_name(epoch: int, rank: int, world: int) -> str:
    return f"epoch{epoch:04d}-rank{rank:04d}-of{world:04d}.records"


def cache_bytes(samples: int, epochs: int, views: int, topk: int, num_classes: int, temperatures,
                feature_dim: int) -> int:
    """Bytes of the shards of a whole cache (the manifest, a few kB, aside)."""
    return samples * epochs * views * record_bytes(topk, num_classes, temperatures, feature_dim)


# The figures of docs/teacher-cache.md (tests/teacher_cache/test_layout.py checks the page against them).
IMAGENET_TRAIN = 1_281_167
SIZE_CASES = [  # (what, classes, samples, epochs, views, K, temperatures, feature dim)
    ("demo: 200 photos, 30 epochs", 10, 200, 30, 1, 2, [4.0], 0),
    ("demo: 200 photos, 30 epochs", 10, 200, 30, 1, 2, [4.0], 512),
    ("demo: 200 photos, 30 epochs", 10, 200, 30, 1, 10, [4.0], 0),
    ("demo: 200 photos, 30 epochs", 10, 200, 30, 1, 10, [4.0], 512),
    ("demo: 200 photos, 30 epochs", 10, 200, 30, 2, 2, [4.0], 0),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 1, 10, [4.0], 0),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 1, 10, [1.0, 4.0], 0),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 1, 10, [4.0], 512),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 1, 10, [4.0], 2048),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 2, 10, [4.0], 0),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 1, 100, [4.0], 0),
    ("ImageNet-1k, 100 epochs", 1000, IMAGENET_TRAIN, 100, 1, 1000, [4.0], 0),
]


def _human(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def size_table() -> str:
    """The markdown table of docs/teacher-cache.md: bytes per (sample, epoch) and in all."""
    rows = ["| data | classes | views | K | temperatures | features | bytes per record | bytes per (sample, epoch) "
            "| whole cache |", "|---|---|---|---|---|---|---|---|---|"]
    for what, classes, samples, epochs, views, k, temps, dim in SIZE_CASES:
        per_record = record_bytes(k, classes, temps, dim)
        total = cache_bytes(samples, epochs, views, k, classes, temps, dim)
        rows.append(f"| {what} | {classes} | {views} | {k} | {', '.join(map(str, temps))} | {dim or '-'} "
                    f"| {per_record} | {views * per_record} | {_human(total)} |")
    return "\n".join(rows)
