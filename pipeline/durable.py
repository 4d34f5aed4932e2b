"""Durability on disk, shared by checkpoints and the teacher cache (no torch: a cache writer needs none)."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path):
    """fsync a folder, so that a rename or a new file inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_durably(path: Path, text: str):
    """Replace a small file whole and on disk: temporary file, fsync, rename (a crash leaves the old or the new)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
