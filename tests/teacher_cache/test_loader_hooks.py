"""The one place the cache reads the loaders: the train listing of a folder and of webdataset shards."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.data.folder import FolderListing
from pipeline.data.webdataset import Shards
from pipeline.teacher_cache.loader_hooks import train_listing


def test_folder_listing_names_files_relative_to_the_root():
    listing = FolderListing(Path("/data/train"), ["a", "b", "c"], ["a/1.jpg", "b/2.jpg", "b/3.jpg"], [0, 1, 1])
    names, labels, classes = train_listing(SimpleNamespace(listing=listing))  # the torchvision loader
    assert names == ["a/1.jpg", "b/2.jpg", "b/3.jpg"] and labels.tolist() == [0, 1, 1] and classes == 3
    assert labels.dtype == np.int64


def test_webdataset_samples_are_named_by_tar_and_position():
    class Labelled(Shards):
        def sample_labels(self):
            return np.array([2, 0, 1, 1, 0])

    shards = Labelled(Path("/d/train"), [Path("/d/train/s-0.tar"), Path("/d/train/s-1.tar")], [], [2, 3],
                      ["x", "y", "z"])
    names, labels, classes = train_listing(SimpleNamespace(listing=None, source=shards))  # the DALI loader
    assert names == ["s-0.tar#0", "s-0.tar#1", "s-1.tar#0", "s-1.tar#1", "s-1.tar#2"]
    assert labels.tolist() == [2, 0, 1, 1, 0] and classes == 3
