"""The `webdataset` format: WebDataset tar shards with DALI index files, read by either loader.

Layout (`data.format: webdataset`, `data.root` = ROOT):

    ROOT/train/shard-00000.tar   ROOT/train/shard-00000.idx   ...   ROOT/train/classes.txt
    ROOT/val/shard-00000.tar     ROOT/val/shard-00000.idx     ...   ROOT/val/classes.txt

Each tar holds samples as consecutive members sharing a key (`<key>.<ext>`, the webdataset convention):
  <key>.jpg    the original image file, bytes unchanged
  <key>.index  the sample's dataset index, 8 bytes little-endian int64 (CRD keys its memory by it)
  <key>.label  its class, 8 bytes little-endian int64
Each `.idx` next to a tar is DALI's index for it (made by DALI's own `wds2idx` tool: a `v1.2 <samples>`
header, then one line per sample with each component's extension, offset, size and name), so no tar is
ever scanned: both loaders read any sample by its offsets from the memory-mapped tars, in the order the
sample plan says (the sample table maps each dataset index to its place in the tars). `classes.txt`
lists the class names, one per line, in label order. Dataset index i is the i-th file of the folder
listing the shards were written from, so indices, classes, sample order and crop windows agree with the
folder loaders.

This module needs no DALI; the writer (`python -m pipeline.data.dali SRC DST`) is in `dali/webdataset.py`.
"""
from __future__ import annotations

import io
import mmap
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.errors import BadInputError, MissingInputError

COMPONENTS = ("jpg", "index", "label")  # what a sample holds, in this order


@dataclass
class Shards:
    """One split's tars and DALI index files, with the counts the loaders need up front."""
    root: Path
    tars: list[Path]
    indexes: list[Path]
    sizes: list[int]  # samples per tar (from the index headers)
    classes: list[str]

    @property
    def num_samples(self) -> int:
        return sum(self.sizes)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def offsets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tar of each sample, (N, 3) offsets, (N, 3) sizes of its COMPONENTS), from the index files."""
        tar_of = np.repeat(np.arange(len(self.tars)), self.sizes)
        offsets = np.zeros((self.num_samples, len(COMPONENTS)), dtype=np.int64)
        sizes = np.zeros_like(offsets)
        position = 0
        for index in self.indexes:
            for n, line in enumerate(Path(index).read_text().splitlines()[1:], 2):
                fields = line.split()  # (extension, offset, size, member name) per component
                parts = {ext: (int(off), int(size)) for ext, off, size, _ in zip(*[iter(fields)] * 4)}
                if any(c not in parts for c in COMPONENTS):
                    raise BadInputError(f"{index}:{n}: a sample needs the components {', '.join(COMPONENTS)}, "
                                        f"found {', '.join(parts) or 'none'}")
                offsets[position] = [parts[c][0] for c in COMPONENTS]
                sizes[position] = [parts[c][1] for c in COMPONENTS]
                position += 1
        if position != self.num_samples:
            raise BadInputError(f"{self.root}: the .idx headers count {self.num_samples} samples, their lines "
                                f"{position}; remake the index files with `wds2idx TAR IDX`")
        return tar_of, offsets, sizes

    @cached_property
    def maps(self) -> list[mmap.mmap]:
        """Each tar memory-mapped read-only, once per process (forked loader workers share the pages)."""
        maps = []
        for tar in self.tars:
            with open(tar, "rb") as f:
                maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        return maps

    def member(self, position: int, component: int = 0) -> np.ndarray:
        """The bytes of COMPONENTS[component] of sample `position` (tar order): a view into the map, no copy."""
        tar_of, offsets, sizes = self.offsets
        return np.frombuffer(self.maps[tar_of[position]], dtype=np.uint8, count=int(sizes[position, component]),
                             offset=int(offsets[position, component]))

    def will_need(self, positions: np.ndarray):
        """Ask the kernel to start reading these samples' images (readahead, asynchronous)."""
        tar_of, offsets, sizes = self.offsets
        for p in np.asarray(positions).reshape(-1).tolist():
            start = int(offsets[p, 0]) // mmap.PAGESIZE * mmap.PAGESIZE
            self.maps[tar_of[p]].madvise(mmap.MADV_WILLNEED, start, int(offsets[p, 0] + sizes[p, 0]) - start)

    def load(self, position: int) -> tuple[io.BytesIO, int, int]:
        """Sample `position` of the tars in order: (image bytes, class, dataset index)."""
        jpg, index, label = (self.member(position, c) for c in range(len(COMPONENTS)))
        return io.BytesIO(jpg.tobytes()), int(label[:8].view("<i8")[0]), int(index[:8].view("<i8")[0])

    def sample_labels(self) -> np.ndarray:
        """(N,) int64: the class of every sample by its dataset index, from the `.index` and `.label` members
        alone (8 bytes each, found through the index files): CRD's negative sampler needs it up front."""
        tar_of, offsets, sizes = self.offsets
        labels = np.full(self.num_samples, -1, dtype=np.int64)
        idx, lab = COMPONENTS.index("index"), COMPONENTS.index("label")
        for t, tar in enumerate(self.tars):
            with open(tar, "rb") as f:
                for position in np.flatnonzero(tar_of == t).tolist():
                    f.seek(offsets[position, idx])
                    index = int(np.frombuffer(f.read(sizes[position, idx]), "<i8")[0])
                    f.seek(offsets[position, lab])
                    labels[index] = int(np.frombuffer(f.read(sizes[position, lab]), "<i8")[0])
        if (labels < 0).any():
            raise BadInputError(f"{self.root}: the shards' dataset indices do not cover 0..{self.num_samples - 1}")
        return labels

    def describe(self, position: int) -> str:
        """`<tar>:<image member>` of sample `position`, for error messages (as DALI names a sample)."""
        tar_of = self.offsets[0]
        first = sum(self.sizes[:tar_of[position]])
        line = Path(self.indexes[tar_of[position]]).read_text().splitlines()[1 + position - first].split()
        names = {ext: name for ext, _, _, name in zip(*[iter(line)] * 4)}
        return f"{self.tars[tar_of[position]]}:{names.get(COMPONENTS[0], line[3])}"


def list_shards(split_dir: str | Path) -> Shards:
    split_dir = Path(split_dir)
    tars = sorted(split_dir.glob("*.tar"))
    if not tars:
        raise MissingInputError(f"no .tar shards in {split_dir} (see pipeline/data/webdataset.py for the layout)")
    indexes = [t.with_suffix(".idx") for t in tars]
    missing = [str(i) for i in indexes if not i.is_file()]
    if missing:
        raise MissingInputError(f"DALI index files missing (make them with `wds2idx TAR IDX`): {', '.join(missing)}")
    sizes = []
    for idx in indexes:
        with open(idx) as f:
            header = f.readline().split()
        if len(header) != 2 or not header[1].isdigit():
            raise BadInputError(f"{idx}: not a DALI index file (expected a 'v1.2 <samples>' header)")
        sizes.append(int(header[1]))
    classes_file = split_dir / "classes.txt"
    if not classes_file.is_file():
        raise MissingInputError(f"{classes_file} missing: one class name per line, in label order")
    classes = classes_file.read_text().splitlines()
    return Shards(split_dir, tars, indexes, sizes, classes)


def read_samples(tars: list[Path], indexes: list[Path], start: int, stop: int):
    """Samples start..stop-1 of the tars taken in this order, via the DALI index offsets:
    ("<tar>:<image member>", {extension: bytes})."""
    position = 0
    for tar, index in zip(tars, indexes):
        lines = Path(index).read_text().splitlines()[1:]
        if position + len(lines) <= start:
            position += len(lines)
            continue
        with open(tar, "rb") as f:
            for line in lines:
                if position >= stop:
                    return
                if position >= start:
                    fields = line.split()  # (extension, offset, size, member name) per component
                    parts, names = {}, {}
                    for ext, offset, size, name in zip(*[iter(fields)] * 4):
                        f.seek(int(offset))
                        parts[ext], names[ext] = f.read(int(size)), name
                    yield f"{tar}:{names.get('jpg', fields[3])}", parts
                position += 1
