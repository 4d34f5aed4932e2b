"""Writing shards atomically, resuming a killed writer, and checking shards before they are read.

Every rank of a cache pass writes its own shard per epoch (layout.py: rank r holds the samples r,
r + world, ...). A shard is written under `NAME.partial`, sized up front, each batch at its records'
offsets; every `sync_every_s` seconds (and at the end) the data is fsynced and then the progress
(`NAME.partial.progress`: batches done, records done, batch size) is replaced atomically. At the end: fsync,
sha256, rename to NAME, and a small `NAME.done` file (bytes, sha256), which rank 0 folds into the manifest.

A killed writer, restarted with the same flags: finished shards (listed in the manifest or with a `.done`
file, and of the right size) are skipped; a half-written shard CONTINUES from its last durable progress
(so at most `sync_every_s` of work is redone) when the batch size is the same, and restarts otherwise.

Checks before use (`verify_shard`): the size always (one stat per shard), and the sha256 on the first
read of an epoch in each process (one read of the epoch's shards: ~1 s per GB). A missing, truncated or
damaged shard is one line naming it, never data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from pipeline.durable import fsync_dir, write_text_durably
from pipeline.errors import BadInputError, MissingInputError
from pipeline.teacher_cache.layout import shard_of, shard_rows
from pipeline.teacher_cache.manifest import Manifest, read_manifest, write_manifest
from pipeline.teacher_cache.match import check_continuation

log = logging.getLogger(__name__)

REWRITE = "delete it and rerun launch/cache_teacher.py with the same flags to rewrite it"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _write_json_atomically(path: Path, data: dict):
    write_text_durably(path, json.dumps(data))


def verify_shard(root: Path, name: str, entry: dict, checksum: bool):
    """BadInputError naming the shard if it is missing, of another size than the manifest says, or (with
    `checksum`) not matching its sha256."""
    path = Path(root) / name
    if not path.is_file():
        raise MissingInputError(f"teacher cache shard {path} is missing (the manifest lists it): {REWRITE}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise BadInputError(f"teacher cache shard {path} is {size} bytes, the manifest says {entry['bytes']}: "
                            f"truncated or damaged; {REWRITE}")
    if checksum:
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise BadInputError(f"teacher cache shard {path} does not match its checksum ({digest[:23]}, the "
                                f"manifest says {entry['sha256'][:23]}): damaged; {REWRITE}")


class ShardWriter:
    """One (epoch, rank) shard being written. `start_step`: the first batch of the epoch's plan still to do."""

    def __init__(self, root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 30.0):
        self.root, self.manifest, self.rank, self.sync_every_s = Path(root), manifest, rank, sync_every_s
        self.name = manifest.shard_file(epoch, rank)
        self.path = self.root / self.name
        self.partial = self.path.with_name(self.name + ".partial")
        self.progress_path = self.path.with_name(self.name + ".partial.progress")
        self.rows = shard_rows(manifest.samples, rank, manifest.world)
        self.row_bytes = manifest.record.views * manifest.record.dtype.itemsize
        self.start_step, self.records = self._resume_point()
        self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self.fd, self.rows * self.row_bytes)
        self.steps = self.start_step
        self.last_sync = time.monotonic()

    def _resume_point(self) -> tuple[int, int]:
        """(batches, records) already durable in a half-written shard that can be continued, else (0, 0)."""
        if self.partial.is_file() and self.progress_path.is_file():
            progress = json.loads(self.progress_path.read_text())
            if progress["batch_size"] == self.manifest.batch_size:
                log.info("continuing %s after batch %d (%d records)", self.partial, progress["steps"],
                         progress["records"])
                return progress["steps"], progress["records"]
            log.warning("restarting %s: it was begun with inference batch %d, this pass has %d", self.partial,
                        progress["batch_size"], self.manifest.batch_size)
        self.progress_path.unlink(missing_ok=True)
        self.partial.unlink(missing_ok=True)
        return 0, 0

    def write(self, index: np.ndarray, valid: np.ndarray, records: np.ndarray):
        """One batch of the plan: dataset indices (B,), valid (B,) (False on padding), records (B, views)."""
        index, valid = np.asarray(index), np.asarray(valid, dtype=bool)
        if records.dtype != self.manifest.record.dtype or records.shape[1:] != (self.manifest.record.views,):
            raise RuntimeError(f"records {records.dtype} x {records.shape[1:]} do not match the manifest's "
                               f"{self.manifest.record.dtype} x ({self.manifest.record.views},)")
        shard, row = shard_of(index[valid], self.manifest.world)
        if (shard != self.rank).any():
            raise RuntimeError(f"the cache pass gave rank {self.rank} samples of other shards "
                               f"({index[valid][shard != self.rank][:4].tolist()}...): the plan must give rank r the "
                               f"samples r, r + world, ...")
        data = np.ascontiguousarray(records[valid])
        if row.size and (np.diff(row) == 1).all():  # the plan's order: one write per batch
            os.pwrite(self.fd, data.tobytes(), int(row[0]) * self.row_bytes)
        else:
            for r, one in zip(row.tolist(), data):
                os.pwrite(self.fd, one.tobytes(), r * self.row_bytes)
        self.records += int(valid.sum())
        self.steps += 1
        if time.monotonic() - self.last_sync >= self.sync_every_s:
            self.sync()

    def sync(self):
        """Make the batches written so far durable, then record them as done."""
        os.fsync(self.fd)
        _write_json_atomically(self.progress_path, {"steps": self.steps, "records": self.records,
                                                    "batch_size": self.manifest.batch_size})
        self.last_sync = time.monotonic()

    def finish(self) -> dict:
        """Every row written: fsync, checksum, rename into place, and leave the `.done` entry."""
        if self.records != self.rows:
            raise RuntimeError(f"{self.partial}: {self.records} records written, the shard has {self.rows} rows "
                               "(the plan must give every sample of the shard exactly once)")
        os.fsync(self.fd)
        self.close()
        entry = {"bytes": self.rows * self.row_bytes, "sha256": file_sha256(self.partial)}
        os.replace(self.partial, self.path)
        self.progress_path.unlink(missing_ok=True)
        _write_json_atomically(self.path.with_name(self.name + ".done"), entry)
        fsync_dir(self.root)
        return entry

    def close(self):
        """Stop without finishing (the durable progress stays for the next pass)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def shard_done(root: Path, manifest: Manifest, name: str) -> dict | None:
    """The entry of a finished shard (from the manifest or its `.done` file) whose file has that size."""
    entry = manifest.shards.get(name)
    done = Path(root) / (name + ".done")
    if entry is None and done.is_file():
        entry = json.loads(done.read_text())
    path = Path(root) / name
    if entry is not None and path.is_file() and path.stat().st_size == entry["bytes"]:
        return entry
    return None


def open_shard(root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 30.0
               ) -> ShardWriter | None:
    """A writer for this rank's shard of `epoch`, or None when it is finished already."""
    if shard_done(root, manifest, manifest.shard_file(epoch, rank)) is not None:
        return None
    return ShardWriter(root, manifest, epoch, rank, sync_every_s)


def begin(root: str | Path, intended: Manifest) -> Manifest:
    """The manifest a cache pass continues: `intended` itself for a new folder, or the existing one (after
    check_continuation) with its finished shards and the larger epoch count. Every rank calls this; rank
    0 then writes the result (`write_manifest`) before any shard is written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = read_manifest(root)
    if existing is None:
        return intended
    check_continuation(str(root), existing, intended)
    existing.epochs = max(existing.epochs, intended.epochs)
    existing.batch_size, existing.notes = intended.batch_size, intended.notes
    existing.complete = False
    return existing


def finish(root: str | Path, manifest: Manifest, teacher_val: dict | None) -> Manifest:
    """Rank 0, after every rank has finished its shards: gather the `.done` entries into the manifest,
    mark it complete, and write it."""
    root = Path(root)
    missing = []
    for epoch in range(manifest.epochs):
        for rank in range(manifest.world):
            name = manifest.shard_file(epoch, rank)
            entry = shard_done(root, manifest, name)
            if entry is None:
                missing.append(name)
            else:
                manifest.shards[name] = entry
    if missing:
        raise RuntimeError(f"teacher cache {root}: shards not written: {', '.join(missing[:4])}"
                           + (f" (+{len(missing) - 4})" if len(missing) > 4 else ""))
    if teacher_val is not None:
        manifest.teacher_val = teacher_val
    manifest.complete = True
    write_manifest(root, manifest)
    for name in manifest.shards:
        (root / (name + ".done")).unlink(missing_ok=True)
    return manifest
