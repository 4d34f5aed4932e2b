"""WebDataset tar shards for DALI's `fn.readers.webdataset`: the layout, a writer, and the listing.

Layout (`data.format: webdataset`, `data.root` = ROOT):

    ROOT/train/shard-00000.tar   ROOT/train/shard-00000.idx   ...   ROOT/train/classes.txt
    ROOT/val/shard-00000.tar     ROOT/val/shard-00000.idx     ...   ROOT/val/classes.txt

Each tar holds samples as consecutive members sharing a key (`<key>.<ext>`, the webdataset convention):
  <key>.jpg    the original image file, bytes unchanged
  <key>.index  the sample's dataset index, 8 bytes little-endian int64 (CRD keys its memory by it)
  <key>.label  its class, 8 bytes little-endian int64
Each `.idx` next to a tar is DALI's index for it (made by DALI's own `wds2idx` tool: a `v1.2 <samples>`
header, then one line per sample with each component's extension, offset, size and name), so the
reader starts without scanning the tars. `classes.txt` lists the class names, one per line, in label
order. Dataset index i is the i-th file of the folder listing the shards were written from, so indices
and classes agree with the folder/torchvision loaders.

The writer puts train samples in a seeded random order: DALI shuffles with a bounded buffer, which
cannot mix a class-sorted shard. Make shards with
    python -m pipeline.data.dali SRC_ROOT DST_ROOT [--per-shard 1000]
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.folder import FolderListing, list_image_folder

COMPONENTS = ("jpg", "index", "label")  # what the reader returns, in this order


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def list_shards(split_dir: str | Path) -> Shards:
    split_dir = Path(split_dir)
    tars = sorted(split_dir.glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no .tar shards in {split_dir} (see pipeline/data/dali/webdataset.py for the layout)")
    indexes = [t.with_suffix(".idx") for t in tars]
    missing = [str(i) for i in indexes if not i.is_file()]
    if missing:
        raise FileNotFoundError(f"DALI index files missing (make them with `wds2idx TAR IDX`): {', '.join(missing)}")
    sizes = []
    for idx in indexes:
        with open(idx) as f:
            version, count = f.readline().split()
        sizes.append(int(count))
    classes_file = split_dir / "classes.txt"
    if not classes_file.is_file():
        raise FileNotFoundError(f"{classes_file} missing: one class name per line, in label order")
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


def read_shard_labels(shards: Shards) -> np.ndarray:
    """(num_samples,) int64: the class of every sample by its dataset index, read from the shards' `.index`
    and `.label` members via the DALI index offsets (16 bytes per sample; CRD's negative sampler needs it)."""
    labels = np.full(shards.num_samples, -1, dtype=np.int64)
    for tar, index in zip(shards.tars, shards.indexes):
        with open(tar, "rb") as f:
            for line in Path(index).read_text().splitlines()[1:]:
                fields = line.split()  # (extension, offset, size, member name) per component
                parts = {}
                for ext, offset, size, _ in zip(*[iter(fields)] * 4):
                    if ext in ("index", "label"):
                        f.seek(int(offset))
                        parts[ext] = int(np.frombuffer(f.read(int(size)), dtype="<i8")[0])
                labels[parts["index"]] = parts["label"]
    if (labels < 0).any():
        raise ValueError(f"{shards.root}: the shards' dataset indices do not cover 0..{shards.num_samples - 1}")
    return labels


def _add(tar: tarfile.TarFile, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(listing: FolderListing, out_dir: str | Path, per_shard: int = 1000, order: np.ndarray | None = None) -> Shards:
    """Write `listing` as tars + DALI index files + classes.txt in `out_dir`; samples go in `order`."""
    from wds2idx import IndexCreator  # DALI's index tool, installed with nvidia-dali

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(listing)) if order is None else np.asarray(order)
    for shard, start in enumerate(range(0, len(order), per_shard)):
        tar_path = out_dir / f"shard-{shard:05d}.tar"
        with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in order[start:start + per_shard].tolist():
                key = f"{i:08d}"
                _add(tar, f"{key}.jpg", (listing.root / listing.files[i]).read_bytes())
                _add(tar, f"{key}.index", np.int64(i).tobytes())
                _add(tar, f"{key}.label", np.int64(listing.labels[i]).tobytes())
        with IndexCreator(str(tar_path), str(tar_path.with_suffix(".idx")), verbose=False) as index:
            index.create_index()
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in listing.classes))
    return list_shards(out_dir)


def write_webdataset(src_root: str | Path, dst_root: str | Path, per_shard: int = 1000, seed: int = 0):
    """An ImageNet-layout folder (`train/`, `val/`) -> the shard layout above."""
    for split in ("train", "val"):
        listing = list_image_folder(Path(src_root) / split)
        order = np.random.default_rng(seed).permutation(len(listing)) if split == "train" else None
        write_shards(listing, Path(dst_root) / split, per_shard, order)

