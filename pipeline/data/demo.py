"""The embedded demo data: Fashion-MNIST's real product photos written once as an ImageNet-layout
tree of RGB JPEG files (`train/<class>/*.JPEG`, `val/<class>/*.JPEG`), so the demo goes through
exactly the JPEG code path ImageNet does. Source: Debian's `dataset-fashion-mnist`; where that is
absent, torchvision's download (needs the network).
"""
from __future__ import annotations

import fcntl
import gzip
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
           "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot"]
SPLITS = {"train": "train", "val": "t10k"}  # our split name -> the IDX file prefix
REPO_ROOT = Path(__file__).resolve().parents[2]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_arrays(download_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if DEBIAN_DIR.is_dir():
        return {split: (_read_idx(DEBIAN_DIR / f"{prefix}-images-idx3-ubyte.gz"),
                        _read_idx(DEBIAN_DIR / f"{prefix}-labels-idx1-ubyte.gz"))
                for split, prefix in SPLITS.items()}
    log.warning("Debian's dataset-fashion-mnist is not installed (%s missing): trying torchvision's download", DEBIAN_DIR)
    try:
        from torchvision.datasets import FashionMNIST

        out = {}
        for split in SPLITS:
            ds = FashionMNIST(str(download_dir), train=split == "train", download=True)
            out[split] = (ds.data.numpy(), ds.targets.numpy())
        return out
    except Exception as e:  # no network: say how to get the data
        raise RuntimeError(
            "demo data unavailable: install Debian's Fashion-MNIST (`apt-get install -y dataset-fashion-mnist`) "
            f"or allow torchvision to download it ({e})") from e


def demo_root(demo_dir: str) -> Path:
    path = Path(demo_dir)
    return path if path.is_absolute() else REPO_ROOT / path


def prepare_demo_data(demo_dir: str) -> Path:
    """Write the JPEG tree once (atomically: a temporary folder renamed into place) and return its root.
    Processes that share the folder (test workers, separate jobs) take a file lock: one writes, the others
    wait and then read it, so none replaces a tree another is reading."""
    root = demo_root(demo_dir)
    if (root / "COMPLETE").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "COMPLETE").exists():
            _write_demo_tree(root)
    return root


def _write_demo_tree(root: Path):
    from PIL import Image

    log.info("writing the demo data (Fashion-MNIST as JPEG files) to %s, once", root)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root.parent))
    try:
        for split, (images, labels) in _load_arrays(tmp / "download").items():
            for name in CLASSES:
                (tmp / split / name).mkdir(parents=True)
            for i, (pixels, label) in enumerate(zip(images, labels)):
                Image.fromarray(pixels).convert("RGB").save(
                    tmp / split / CLASSES[label] / f"{split}_{i:05d}.JPEG", quality=95)
        shutil.rmtree(tmp / "download", ignore_errors=True)
        (tmp / "COMPLETE").touch()
        if root.exists():  # a partial tree from an interrupted run
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
