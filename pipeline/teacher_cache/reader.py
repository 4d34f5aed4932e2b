"""Reading a teacher cache: (epoch, dataset indices, views) -> the records as numpy arrays.

The arrays are shaped (B, views, ...), the shape a loader's `attach_extras` takes, and named as they
travel in a batch (layout.EXTRA_KEYS). Shards are memory-mapped, found by index (layout.py) whatever the
reader's number of processes; each is checked before its first use in a process (storage.verify_shard:
its size, then its sha256 on the first read of its epoch).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.teacher_cache.layout import EXTRA_KEYS, shard_of, shard_rows
from pipeline.teacher_cache.manifest import Manifest, load_manifest
from pipeline.teacher_cache.storage import verify_shard


class CacheReader:
    def __init__(self, root: str | Path, manifest: Manifest | None = None, checksums: bool = True):
        self.root = Path(root)
        self.manifest = manifest or load_manifest(self.root)
        self.checksums = checksums
        self._epochs: dict[int, list[np.memmap]] = {}  # opened in this process (after a fork, opened again)

    def __getstate__(self):  # a loader worker started by spawn maps the shards itself, never copies them
        return {**self.__dict__, "_epochs": {}}

    def open_epoch(self, epoch: int) -> list[np.memmap]:
        """Every shard of `epoch`, checked (sizes, checksums) and memory-mapped once per process."""
        m = self.manifest
        if not 0 <= epoch < m.epochs:
            raise IndexError(f"teacher cache {self.root} holds epochs 0..{m.epochs - 1}, not {epoch}")
        if epoch not in self._epochs:
            maps = []
            for rank in range(m.world):
                name = m.shard_file(epoch, rank)
                verify_shard(self.root, name, m.shards[name], checksum=self.checksums)
                rows = shard_rows(m.samples, rank, m.world)
                maps.append(np.memmap(self.root / name, dtype=m.record.dtype, mode="r", shape=(rows, m.record.views))
                            if rows else np.empty((0, m.record.views), dtype=m.record.dtype))
            self._epochs[epoch] = maps
        return self._epochs[epoch]

    def records(self, epoch: int, index: np.ndarray, views: int) -> np.ndarray:
        """(B, views) records of samples `index` (dataset indices) at `epoch`, views 0..views-1."""
        index = np.asarray(index, dtype=np.int64)
        if views > self.manifest.record.views:
            raise ValueError(f"teacher cache {self.root} holds {self.manifest.record.views} view(s), asked for {views}")
        if index.size and not (0 <= index.min() and index.max() < self.manifest.samples):
            raise IndexError(f"teacher cache {self.root} holds samples 0..{self.manifest.samples - 1}, "
                             f"asked for {index.min()}..{index.max()}")
        maps = self.open_epoch(epoch)
        shard, row = shard_of(index, self.manifest.world)
        out = np.empty((index.size, views), dtype=self.manifest.record.dtype)
        for rank in np.unique(shard).tolist():
            mine = shard == rank
            out[mine] = maps[rank][row[mine], :views]
        return out

    def __call__(self, epoch: int, index: np.ndarray, views: int) -> dict[str, np.ndarray]:
        """The loader hook: {'teacher_values': (B, views, K), 'teacher_classes', 'teacher_tail' (when K <
        classes), 'teacher_features' (when stored)}, each a contiguous array."""
        records = self.records(epoch, index, views)
        return {EXTRA_KEYS[name]: np.ascontiguousarray(records[name]) for name in records.dtype.names}
