"""Session-wide datasets for the loader tests, written once to temporary folders (see dali_datasets.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from dali_datasets import foolbox_imagenet_files, write_colour_tree, write_file_lists, write_imagenet_tree


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    return write_imagenet_tree(tmp_path_factory.mktemp("imagenet"), foolbox_imagenet_files())


@pytest.fixture(scope="session")
def colour_root(tmp_path_factory) -> Path:
    return write_colour_tree(tmp_path_factory.mktemp("colour"))


@pytest.fixture(scope="session")
def webdataset_root(imagenet_root, tmp_path_factory) -> Path:
    from pipeline.data.dali.webdataset import write_webdataset

    root = tmp_path_factory.mktemp("webdataset")
    write_webdataset(imagenet_root, root, per_shard=6)  # 20 samples -> tars of 6, 6, 6, 2
    return root


@pytest.fixture(scope="session")
def filelist_root(imagenet_root, tmp_path_factory) -> Path:
    """The ImageNet tree as `train.txt`/`val.txt` file lists, in a shuffled order with made-up classes 0..4."""
    return write_file_lists(imagenet_root, tmp_path_factory.mktemp("filelist"))


@pytest.fixture(scope="session", autouse=True)
def sample_table_cache(tmp_path_factory):
    """The sample tables of the tests' temporary trees go to a temporary cache, not the user's."""
    import os

    saved = os.environ.get("KDPIPE_CACHE_DIR")
    os.environ["KDPIPE_CACHE_DIR"] = str(tmp_path_factory.mktemp("kdpipe-cache"))
    yield
    if saved is None:
        os.environ.pop("KDPIPE_CACHE_DIR")
    else:
        os.environ["KDPIPE_CACHE_DIR"] = saved
