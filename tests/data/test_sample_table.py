"""pipeline/data/sample_table.py: every sample's stored image size (and, for shards, where each dataset index
is and its class), read once from the headers and cached under a key that changes with the files."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from dali_datasets import colour_image
from PIL import Image

from pipeline.data import sample_table as st
from pipeline.data.filelist import read_file_lists
from pipeline.data.folder import list_image_folder
from pipeline.data.torch_loader import TorchLoader
from pipeline.data.webdataset import list_shards
from pipeline.errors import BadInputError

COLOUR_SIZES = [(120, 90), (90, 120), (100, 100), (160, 96)]  # (width, height) of image k: k % 4 (dali_datasets)


def decoded_size(path) -> tuple[int, int]:
    """(height, width) of the fully decoded pixels."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).shape[:2]


def test_sizes_are_the_decoded_sizes_for_every_format(colour_root, imagenet_root, filelist_root, webdataset_root):
    colour = list_image_folder(colour_root / "train")
    table = st.sample_table(colour)
    expected = [COLOUR_SIZES[int(os.path.basename(f)[:2]) % 4][::-1] for f in colour.files]
    assert table.sizes.tolist() == [list(e) for e in expected]
    assert np.array_equal(table.position, np.arange(16)) and table.labels.tolist() == colour.labels

    folder = list_image_folder(imagenet_root / "train")
    decoded = [list(decoded_size(folder.root / f)) for f in folder.files]
    assert st.sample_table(folder).sizes.tolist() == decoded
    assert len({tuple(s) for s in decoded}) > 1  # several sizes: a real check

    files = read_file_lists(filelist_root)[0]
    assert st.sample_table(files).sizes.tolist() == [list(decoded_size(files.root / f)) for f in files.files]

    # shards (written in a shuffled order): by dataset index, the folder's sizes and classes, and the
    # position of the tar sample whose .index member names that index
    shards = list_shards(webdataset_root / "train")
    table = st.sample_table(shards)
    assert table.sizes.tolist() == decoded and table.labels.tolist() == folder.labels
    assert [shards.load(int(p))[2] for p in table.position] == list(range(20))
    assert not np.array_equal(table.position, np.arange(20))


def test_the_cache_is_read_back_and_follows_the_files(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    for k in range(3):
        (root / "a").mkdir(parents=True, exist_ok=True)
        colour_image(k, 40 + k, 30).save(root / "a" / f"{k}.jpg")
    listing = list_image_folder(root)
    first = st.sample_table(listing)
    assert first.sizes.tolist() == [[30, 40], [30, 41], [30, 42]]
    assert len(list((st.cache_dir() / "sample-tables").glob(f"{st.listing_key(listing)}.npz"))) == 1

    def no_headers(path):
        raise AssertionError("a header was read although the cache holds the table")

    monkeypatch.setattr(st, "header_size", no_headers)
    assert np.array_equal(st.sample_table(listing).sizes, first.sizes)
    monkeypatch.undo()

    # a file rewritten with other pixels (same name) changes the key: the new size, not the cached one
    stat = os.stat(root / "a" / "1.jpg")
    colour_image(1, 64, 48).save(root / "a" / "1.jpg")
    os.utime(root / "a" / "1.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert st.sample_table(list_image_folder(root)).sizes.tolist() == [[30, 40], [48, 64], [30, 42]]
    # another listing of the same files (a per-class subset) is another table
    assert st.listing_key(list_image_folder(root, per_class=2)) != st.listing_key(list_image_folder(root))
    # a damaged cache file is read again from the headers
    path = st.cache_dir() / "sample-tables" / f"{st.listing_key(listing)}.npz"
    path.write_bytes(b"garbage")
    assert st.sample_table(listing).sizes.tolist() == [[30, 40], [48, 64], [30, 42]]


def test_unreadable_headers_are_refused_by_train_loaders_only(tmp_path, imagenet_root):
    root = tmp_path / "broken"
    shutil.copytree(imagenet_root / "train", root)
    bad = sorted(root.glob("*/*.jpg"))[3]
    bad.write_text("this is not a JPEG")
    listing = list_image_folder(root)
    table = st.sample_table(listing)
    assert table.unreadable().tolist() == [listing.files.index(str(bad.relative_to(root)))]
    common = dict(batch_size=4, views=1, image_size=16, val_resize=16, min_area=0.5, mean=[0.5] * 3, std=[0.5] * 3,
                  workers=0, seed=0, rank=0, world=1, device=torch.device("cpu"))
    with pytest.raises(BadInputError, match=str(bad)):
        TorchLoader(listing, train=True, **common)
    TorchLoader(listing, train=False, **common)  # validation does not crop: it needs no size
