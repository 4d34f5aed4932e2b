"""What the host knows of every sample before it decodes one: the stored image's height and width (the
replayable crop windows are drawn in its pixels), and for tar shards where each dataset index lies and its
class. Read once from the image headers (PIL's lazy open: the header only, never the pixels; threads),
then cached on disk.

The cache (`$KDPIPE_CACHE_DIR`, else `$XDG_CACHE_HOME/kdpipe`, else `~/.cache/kdpipe`: never inside the
dataset, which is often read-only, and where a folder would be taken for a class) holds one file per
listing, named by a hash of everything that would change the table: for folder and file-list formats the
listing (relative path and class of every sample) with each file's size and modification time; for
webdataset each tar's and index file's name, size and modification time. An edited, added, removed or
re-written file gives another name, so a table is never silently stale. Files are written atomically
(several ranks or jobs may race; the same name means the same content).

Cost (`python bench/sample_table.py`, docs/performance.md): on the demo's 60,000 train JPEGs (local disk,
warm page cache, 2 loaded cores, 8 threads) the first run takes 196 us per image (12 s: the key's stat and
PIL's header parse, which holds the GIL), a later run 23 us per image (1.4 s, nearly all of it the stats of
the key). For ImageNet's 1,281,167 train images that is about 4 minutes once and 30 s at every start, per
process, on a local disk. ImageNet's JPEGs have longer headers than these 28-pixel ones (EXIF, ICC), but
PIL stops at the frame header, within the first read of a few KB. On a network file system the first run
pays one open and one small read per file and every start one stat per file (metadata round trips,
overlapped by the threads): with 0.2-1 ms per round trip and 8 threads, roughly 0.5-3 minutes per start
per process. Webdataset shards avoid the per-start cost (their key is a few stats per tar) and read their
first-run headers from the mapped tars; on a cluster file system, prefer them.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.folder import FolderListing
from pipeline.data.webdataset import COMPONENTS, Shards

log = logging.getLogger(__name__)

VERSION = "kdpipe sample table v1"
THREADS = 8  # threads overlap the file system's latency (a network file system's above all)
HEADER_PREFIX = 1 << 16  # tar members: bytes handed to PIL first (the whole member when the header is longer)


@dataclass
class SampleTable:
    sizes: np.ndarray  # (N, 2) int64: (height, width) of the stored image, by dataset index; 0 = unreadable
    position: np.ndarray  # (N,) int64: where dataset index i is in the source (listing line / tar order)
    labels: np.ndarray  # (N,) int64: class, by dataset index

    def unreadable(self) -> np.ndarray:
        """Dataset indices whose image header could not be read."""
        return np.flatnonzero((self.sizes <= 0).any(axis=1))


def cache_dir() -> Path:
    if os.environ.get("KDPIPE_CACHE_DIR"):
        return Path(os.environ["KDPIPE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdpipe"


def sample_table(source: FolderListing | Shards, threads: int = THREADS) -> SampleTable:
    """The table of `source`, from the cache when its key matches, else read from the headers and cached."""
    key = listing_key(source, threads)
    path = cache_dir() / "sample-tables" / f"{key}.npz"
    n = len(source)
    try:
        with np.load(path) as saved:
            table = SampleTable(saved["sizes"], saved["position"], saved["labels"])
        if table.sizes.shape == (n, 2) and table.position.shape == table.labels.shape == (n,):
            return table
    except (OSError, ValueError, KeyError):  # absent, or a damaged file: read the headers again
        pass
    start = time.perf_counter()
    table = _read_shards(source, threads) if isinstance(source, Shards) else _read_folder(source, threads)
    log.info("read the image headers of %d samples of %s in %.1f s; cached in %s", n, source.root,
             time.perf_counter() - start, path)
    _save(path, table)
    return table


def listing_key(source: FolderListing | Shards, threads: int = THREADS) -> str:
    """A hash of what the table depends on (see the module docstring)."""
    digest = hashlib.sha256(VERSION.encode())
    if isinstance(source, Shards):
        files = [*source.tars, *source.indexes]
        digest.update(b"webdataset\n")
        names = [f.name for f in files]
    else:
        files = [source.root / f for f in source.files]
        digest.update(b"files\n")
        names = [f"{f}\t{label}" for f, label in zip(source.files, source.labels)]
    stats = parallel(os.stat, files, threads, chunk=1024)
    for name, st in zip(names, stats):
        digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def parallel(fn, items, threads: int, chunk: int) -> list:
    """[fn(x) for x in items] on `threads` threads, a chunk of items per task (a task per item costs
    more in thread hand-offs than a warm-cache stat or header read does)."""
    items = list(items)
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    with ThreadPoolExecutor(threads) as pool:
        return [y for part in pool.map(lambda xs: [fn(x) for x in xs], chunks) for y in part]


def header_size(data) -> tuple[int, int]:
    """(height, width) from an image's header (a path or a file object); (0, 0) when it cannot be read."""
    try:
        with Image.open(data) as image:
            width, height = image.size
        return height, width
    except Exception:  # noqa: BLE001  (any unreadable file: the loaders name it)
        return 0, 0


def _read_folder(listing: FolderListing, threads: int) -> SampleTable:
    sizes = parallel(header_size, [listing.root / f for f in listing.files], threads, chunk=256)
    n = len(listing)
    return SampleTable(np.asarray(sizes, dtype=np.int64).reshape(n, 2), np.arange(n, dtype=np.int64),
                       listing.sample_labels())


def _member_size(member: np.ndarray) -> tuple[int, int]:
    size = header_size(io.BytesIO(member[:HEADER_PREFIX]))
    if size == (0, 0) and len(member) > HEADER_PREFIX:  # a header longer than the prefix (large EXIF/ICC)
        size = header_size(io.BytesIO(member))
    return size


def _read_shards(shards: Shards, threads: int) -> SampleTable:
    n = shards.num_samples
    jpg, idx, lab = (COMPONENTS.index(c) for c in ("jpg", "index", "label"))

    def read(position: int) -> tuple[int, int, int, int]:
        index, label = (int(shards.member(position, c)[:8].view("<i8")[0]) for c in (idx, lab))
        return (index, label, *_member_size(shards.member(position, jpg)))

    rows = np.asarray(parallel(read, range(n), threads, chunk=256), dtype=np.int64).reshape(n, 4)
    index = rows[:, 0]
    if not np.array_equal(np.sort(index), np.arange(n)):
        from pipeline.errors import BadInputError

        raise BadInputError(f"{shards.root}: the shards' dataset indices are not 0..{n - 1} once each")
    position = np.empty(n, dtype=np.int64)
    position[index] = np.arange(n)
    return SampleTable(rows[position, 2:], position, rows[position, 1])


def _save(path: Path, table: SampleTable):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            np.savez(f, sizes=table.sizes, position=table.position, labels=table.labels)
        os.replace(f.name, path)
    except OSError as e:  # a read-only cache costs the header pass next time, nothing else
        log.warning("cannot cache the sample table in %s: %s", path, e)
