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
