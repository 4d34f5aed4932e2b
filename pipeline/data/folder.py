"""The one listing of an ImageNet-layout folder (`<root>/<split>/<class>/<image>`), shared by every loader.

Classes are sorted as torchvision's ImageFolder sorts them; samples are sorted within a class, so
sample index i means the same file to the torchvision loader, the DALI readers and CRD's memory banks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import MissingInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class FolderListing:
    root: Path
    classes: list[str]
    files: list[str]  # paths relative to root
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sample_labels(self) -> np.ndarray:
        """(N,) int64: the class of every sample, by dataset index."""
        return np.asarray(self.labels, dtype=np.int64)

    def load(self, i: int) -> tuple[Path, int, int]:
        """Sample i: (image file, class, dataset index), as `webdataset.Shards.load` gives a tar's sample."""
        return self.root / self.files[i], self.labels[i], i

    def describe(self, i: int) -> str:
        return str(self.root / self.files[i])


def list_image_folder(root: str | Path, per_class: int = 0) -> FolderListing:
    """List `root/<class>/*`; `per_class` > 0 keeps the first that many files of each class."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"dataset folder not found: {root} (expected <root>/<class>/<image files>)")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise MissingInputError(f"no class folders in {root} (expected <root>/<class>/<image files>)")
    files, labels = [], []
    for label, name in enumerate(classes):
        names = sorted(f for f in os.listdir(root / name) if f.lower().endswith(IMAGE_EXTENSIONS))
        if per_class > 0:
            names = names[:per_class]
        files += [f"{name}/{f}" for f in names]
        labels += [label] * len(names)
    if not files:
        raise MissingInputError(f"no image files under {root} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return FolderListing(root, classes, files, labels)
