"""Test datasets for the loader tests (fixtures in conftest.py).

- the 20 real ImageNet JPEGs shipped in the foolbox==3.3.4 wheel, as an ImageNet-layout tree
  (train/ and val/ hold the same 20 files; class folder = the ImageNet label in the file name).
- colour images: synthetic JPEGs whose pixels say which image and which part of it a crop came from:
  red is a constant that encodes the image number (its file name), green ramps left to right and blue
  ramps top to bottom. Two crops of one image share the red level but differ in their green/blue
  statistics unless they are the same window; a horizontal flip reverses the green ramp.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

COLOUR_BASE, COLOUR_STEP = 40, 10  # red level of image k = COLOUR_BASE + COLOUR_STEP * k


def foolbox_imagenet_files() -> list[Path]:
    # foolbox itself cannot be imported here (it needs eagerpy): locate its package folder instead.
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None, "foolbox==3.3.4 must be installed in the venv (its data/ folder holds the test JPEGs)"
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = sorted(data.glob("imagenet_*.jpg"))
    assert len(files) == 20, f"expected the 20 ImageNet JPEGs in {data}"
    return files


def write_imagenet_tree(root: Path, files: list[Path], splits=("train", "val")) -> Path:
    for split in splits:
        for f in files:
            label = int(f.stem.split("_")[2])  # imagenet_<index>_<label>.jpg
            dest = root / split / f"n{label:04d}"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.name)
    return root


def colour_image(k: int, width: int, height: int) -> Image.Image:
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = COLOUR_BASE + COLOUR_STEP * k
    pixels[..., 1] = np.linspace(0, 255, width).round().astype(np.uint8)[None, :]
    pixels[..., 2] = np.linspace(0, 255, height).round().astype(np.uint8)[:, None]
    return Image.fromarray(pixels)


def write_colour_tree(root: Path) -> Path:
    """16 images (2 classes x 8) named `<k>.jpg`, k = 0..15, of a few sizes and aspect ratios."""
    sizes = [(120, 90), (90, 120), (100, 100), (160, 96)]
    for split in ("train", "val"):
        for k in range(16):
            folder = root / split / f"class{k % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            # quality 95 and no chroma subsampling keep the red level within a grey level or two
            colour_image(k, *sizes[k % 4]).save(folder / f"{k:02d}.jpg", quality=95, subsampling=0)
    return root


def write_file_lists(imagenet_root: Path, root: Path) -> Path:
    """`root/train.txt`, `root/val.txt` (`<path> <class>`) over a copy of the tree, lines in a seeded
    random order, class = position in that order mod 5 (made up, so that it cannot come from the folders)."""
    train = sorted(p.relative_to(imagenet_root / "train") for p in (imagenet_root / "train").glob("*/*.jpg"))
    order = np.random.default_rng(0).permutation(len(train))
    for split in ("train", "val"):
        shutil.copytree(imagenet_root / split, root / split)
        (root / f"{split}.txt").write_text("".join(f"{split}/{train[i]} {i % 5}\n" for i in order))
    return root
