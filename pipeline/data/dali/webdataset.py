"""Write WebDataset tar shards + DALI index files (the layout and the DALI-free reader: pipeline/data/webdataset.py).

The writer puts train samples in a seeded random order: DALI shuffles with a bounded buffer, which
cannot mix a class-sorted shard. Make shards with
    python -m pipeline.data.dali SRC_ROOT DST_ROOT [--per-shard 1000]
The index files come from DALI's own `wds2idx` tool (installed with nvidia-dali).
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from pipeline.data.folder import FolderListing, list_image_folder
from pipeline.data.webdataset import COMPONENTS, Shards, list_shards, read_samples  # noqa: F401  (moved here)



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

