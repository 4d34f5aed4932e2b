"""Session-wide datasets for the loader tests, written once to temporary folders (see dali_datasets.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from dali_datasets import foolbox_imagenet_files, write_colour_tree, write_imagenet_tree


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    return write_imagenet_tree(tmp_path_factory.mktemp("imagenet"), foolbox_imagenet_files())


@pytest.fixture(scope="session")
def colour_root(tmp_path_factory) -> Path:
    return write_colour_tree(tmp_path_factory.mktemp("colour"))
