"""Which samples each process reads (pipeline/data/sharding.py) and what the torchvision loader actually
yields, for 1-4 processes, without DALI: every sample at most once per epoch (exactly once when nothing
is ragged), disjoint across ranks, equal steps everywhere, validation counted exactly once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.folder import list_image_folder
from pipeline.data.sharding import train_indices, train_steps, val_indices
from pipeline.data.torch_loader import TorchLoader

WORLDS = [1, 2, 3, 4]


# ---- the plans ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_samples, batch_size, world, steps", [
    (24, 2, 1, 12), (24, 2, 2, 6), (24, 2, 3, 4), (24, 2, 4, 3),  # 24 = world * batch * steps: nothing dropped
    (25, 2, 3, 4),  # 25 // 3 = 8 per rank -> 4 steps of 2; 1 sample dropped
    (10, 2, 3, 1),  # 10 // 3 = 3 per rank -> 1 step of 2; the ragged rest dropped
    (7, 2, 4, 0),  # fewer than a batch per rank: no step at all
])
def test_train_plan_covers_each_sample_at_most_once_with_equal_steps(num_samples, batch_size, world, steps):
    assert train_steps(num_samples, batch_size, world) == steps
    for epoch in range(3):
        plans = [train_indices(num_samples, batch_size, r, world, seed=5, epoch=epoch) for r in range(world)]
        assert all(p.shape == (steps, batch_size) for p in plans)
        seen = np.concatenate([p.ravel() for p in plans]).tolist()
        assert len(seen) == len(set(seen)) == world * steps * batch_size  # disjoint across ranks, no repeats
        assert all(0 <= i < num_samples for i in seen)
        if num_samples == world * steps * batch_size:
            assert sorted(seen) == list(range(num_samples))  # every sample exactly once


def test_train_plan_is_a_new_order_each_epoch_and_the_same_on_a_rerun():
    def plan(seed, epoch):
        return np.concatenate([train_indices(24, 2, r, 2, seed, epoch).ravel() for r in range(2)])

    assert np.array_equal(plan(5, 1), plan(5, 1))  # deterministic: a resumed run replays the epoch
    assert not np.array_equal(plan(5, 0), plan(5, 1))  # a new order each epoch
    assert not np.array_equal(plan(5, 0), plan(6, 0))  # and the seed matters
    assert not np.array_equal(plan(5, 0), np.arange(24))  # shuffled at all
    # each rank's share changes between epochs too (not just the order inside a fixed shard)
    assert set(train_indices(24, 2, 0, 2, 5, 0).ravel()) != set(train_indices(24, 2, 0, 2, 5, 1).ravel())


def test_val_plan_worked_by_hand():
    # 5 samples, 2 ranks, batches of 2: rank 0 reads 0, 2, 4 (+1 pad), rank 1 reads 1, 3 (+2 pads);
    # both take 2 steps and every pad reads sample 0, masked invalid.
    idx0, valid0 = val_indices(5, 2, 0, 2)
    idx1, valid1 = val_indices(5, 2, 1, 2)
    assert idx0.tolist() == [[0, 2], [4, 0]] and valid0.tolist() == [[True, True], [True, False]]
    assert idx1.tolist() == [[1, 3], [0, 0]] and valid1.tolist() == [[True, True], [False, False]]


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("num_samples, batch_size", [(13, 4), (20, 3), (5, 8), (16, 2)])
def test_val_plan_counts_every_sample_exactly_once(num_samples, batch_size, world):
    plans = [val_indices(num_samples, batch_size, r, world) for r in range(world)]
    assert len({idx.shape for idx, _ in plans}) == 1  # the same number of steps on every rank
    counted = np.concatenate([idx[valid] for idx, valid in plans]).tolist()
    assert sorted(counted) == list(range(num_samples))
    for idx, valid in plans:
        assert idx.shape[1] == batch_size and (0 <= idx).all() and (idx < num_samples).all()  # pads are readable
        steps = idx.shape[0]
        assert (steps - 1) * batch_size < -(-num_samples // world)  # no step made only of padding


# ---- the torchvision loader's actual batches ---------------------------------------------------------------
def torch_loader(root, train, rank, world, batch_size, per_class):
    listing = list_image_folder(root / ("train" if train else "val"), per_class)
    return listing, TorchLoader(listing, train=train, batch_size=batch_size, views=1, image_size=8, val_resize=8,
                                min_area=0.5, mean=[0.5] * 3, std=[0.5] * 3, workers=0, seed=11, rank=rank,
                                world=world, device=torch.device("cpu"))


def folder_label(listing, i):
    """The class of sample i from its folder name ('3_dress/...' -> 3): independent of listing.labels."""
    return int(listing.files[i].split("_", 1)[0])


@pytest.mark.parametrize("world", WORLDS)
def test_torch_loader_train_epochs_cover_every_sample_once_across_ranks(demo_root, world):
    # 20 images (2 per class); nothing ragged for 1, 2 and 4 ranks, 2 images dropped for 3
    batch_size = {1: 4, 2: 5, 3: 3, 4: 5}[world]
    loaders = [torch_loader(demo_root, True, r, world, batch_size, per_class=2) for r in range(world)]
    listing = loaders[0][0]
    assert len(listing) == 20
    expected_steps = {1: 5, 2: 2, 3: 2, 4: 1}[world]  # (20 // world) // batch_size, worked by hand
    orders = []
    for epoch in range(2):
        seen = []
        for _, loader in loaders:
            loader.set_epoch(epoch)
            batches = list(loader)  # every batch of the epoch, not just the first
            assert len(batches) == len(loader) == expected_steps
            for b in batches:
                assert b["index"].shape == (batch_size,)
                assert b["labels"].tolist() == [folder_label(listing, i) for i in b["index"].tolist()]
                seen += b["index"].tolist()
        assert len(seen) == len(set(seen)) == world * expected_steps * batch_size  # disjoint, no repeats
        if world * expected_steps * batch_size == 20:
            assert sorted(seen) == list(range(20))
        orders.append(seen)
    assert orders[0] != orders[1]
    # resuming mid-epoch yields the rest of the epoch, the same batches
    if expected_steps > 1:
        _, loader = loaders[0]
        loader.set_epoch(1)
        full = [b["index"].tolist() for b in loader]
        loader.set_epoch(1, start_step=1)
        assert [b["index"].tolist() for b in loader] == full[1:]


@pytest.mark.parametrize("world", WORLDS)
def test_torch_loader_validation_counts_every_image_once(demo_root, world):
    counted, steps = [], []
    for rank in range(world):
        listing, loader = torch_loader(demo_root, False, rank, world, batch_size=3, per_class=1)
        batches = list(loader)
        steps.append(len(batches))
        for b in batches:
            assert b["index"].shape == b["valid"].shape == (3,)
            valid_index = b["index"][b["valid"]].tolist()
            assert b["labels"][b["valid"]].tolist() == [folder_label(listing, i) for i in valid_index]
            counted += valid_index
    assert len(set(steps)) == 1  # the same number of steps on every rank
    assert sorted(counted) == list(range(10))
