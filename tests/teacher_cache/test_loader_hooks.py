"""The one place the cache reads the loaders: the train listing of a folder and of webdataset shards, and
the cache pass's every-sample train loaders."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.config import parse_args
from pipeline.data.folder import FolderListing
from pipeline.data.webdataset import Shards
from pipeline.teacher_cache.loader_hooks import cache_pass_loaders, train_listing


def test_folder_listing_names_files_relative_to_the_root():
    listing = FolderListing(Path("/data/train"), ["a", "b", "c"], ["b/2.jpg", "a/1.jpg", "b/3.jpg"], [1, 0, 1])
    for given in (listing, SimpleNamespace(source=listing)):  # a listing, or a loader holding it
        names, labels, classes = train_listing(given)  # in index order, as the listing has them
        assert names == ["b/2.jpg", "a/1.jpg", "b/3.jpg"] and labels.tolist() == [1, 0, 1] and classes == 3
        assert labels.dtype == np.int64


def test_webdataset_samples_are_named_by_tar_and_position():
    class Labelled(Shards):
        def sample_labels(self):
            return np.array([2, 0, 1, 1, 0])

    shards = Labelled(Path("/d/train"), [Path("/d/train/s-0.tar"), Path("/d/train/s-1.tar")], [], [2, 3],
                      ["x", "y", "z"])
    names, labels, classes = train_listing(SimpleNamespace(source=shards))
    assert names == ["s-0.tar#0", "s-0.tar#1", "s-1.tar#0", "s-1.tar#1", "s-1.tar#2"]
    assert labels.tolist() == [2, 0, 1, 1, 0] and classes == 3
    with pytest.raises(TypeError, match="not a folder listing"):
        train_listing(SimpleNamespace(source=[1, 2]))


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_cache_pass_loader_reads_every_sample_once_with_an_inference_batch_above_the_train_plans(demo_root, backend):
    """30 samples over 2 ranks with batches of 32 (more than a rank's 15: the train plan has no step at
    all): each rank reads its 15 samples r, r + 2, ... once, padded, marked with `valid`."""
    cfg, _ = parse_args(["--data.backend", backend, "--data.per_class", "3", "--data.workers", "0"])
    seen = []
    for rank in range(2):
        train, _ = cache_pass_loaders(cfg, batch_size=32, views=2, rank=rank, world=2, device=torch.device("cpu"))
        train.set_epoch(1)
        batches = list(train)
        assert len(batches) == 1 and batches[0]["images"].shape[0] == 2 * 32
        valid = batches[0]["valid"].numpy()
        index = batches[0]["index"].numpy()[valid]
        assert index.tolist() == list(range(rank, 30, 2))
        seen += index.tolist()
    assert sorted(seen) == list(range(30))
