"""The hooks other parts build on (pipeline/data/planned.py), on both loaders: `attach_extras` (per-sample
arrays arrive view-major, on the rows of their samples, for the batch's epoch, moved with the images) and the
`every_sample` plan (every dataset index once per epoch across ranks, padded with `valid`, with the train
views of that epoch)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline.config import DataConfig  # noqa: E402
from pipeline.data import build_loaders  # noqa: E402
from pipeline.data.dali import loader as dali_loader  # noqa: E402
from pipeline.data.sharding import epoch_plan, val_indices  # noqa: E402

CPU = torch.device("cpu")
BACKENDS = ["dali", "torch"]
pytestmark = pytest.mark.timeout(300)


def train_loader(root, backend, views, world=1, rank=0, workers=1):
    cfg = DataConfig(root=str(root), backend=backend, image_size=24, val_resize=24, min_area=0.25,
                     mean=[0.5] * 3, std=[0.25] * 3, workers=workers)
    return build_loaders(cfg, batch_size=4, views=views, seed=1, rank=rank, world=world, device=CPU)[0]


def tags(epoch: int, index: np.ndarray, views: int) -> dict[str, np.ndarray]:
    """Arrays that say which (epoch, sample, view) they belong to, and which process made them."""
    tag = np.stack(np.broadcast_arrays(epoch, index[:, None], np.arange(views)[None, :]), axis=-1)
    return {"tag": tag.astype(np.float32), "pid": np.full((len(index), views), os.getpid(), dtype=np.int64)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("views", [1, 2])
def test_extras_arrive_view_major_on_their_rows_for_the_epoch(imagenet_root, backend, views, monkeypatch):
    specs = []
    build = dali_loader.build_pipeline
    monkeypatch.setattr(dali_loader, "build_pipeline", lambda spec, feed: specs.append(spec) or build(spec, feed))
    loader = train_loader(imagenet_root, backend, views)
    loader.attach_extras(tags)
    for epoch in (0, 2):
        loader.set_epoch(epoch)
        for batch in loader:
            b = len(batch["index"])
            assert batch["tag"].shape == (views * b, 3) and batch["tag"].dtype == torch.float32
            assert batch["pid"].shape == (views * b,) and batch["pid"].dtype == torch.int64
            expected = [[epoch, i, v] for v in range(views) for i in batch["index"].tolist()]  # view-major
            assert batch["tag"].tolist() == expected
            if backend == "torch":  # made inside the DataLoader worker that assembled the batch
                assert (batch["pid"] != os.getpid()).all()
    if backend == "dali":  # outputs of the pipeline, one per key and view
        assert specs[-1].extras == 2 * views
    loader.attach_extras(None)
    assert "tag" not in next(iter(loader))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_extras_are_refused_naming_the_key(imagenet_root, backend):
    loader = train_loader(imagenet_root, backend, 2, workers=0)
    with pytest.raises(ValueError, match="'tag' has shape"):
        loader.attach_extras(lambda epoch, index, views: {"tag": np.zeros((len(index), 1))})
    with pytest.raises(ValueError, match="the batch's own"):
        loader.attach_extras(lambda epoch, index, views: {"labels": np.zeros((len(index), views))})


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_sample_plan_splits_like_validation(world):
    for rank in range(world):
        for epoch in (0, 1):
            index, valid = epoch_plan("every_sample", 19, 4, rank, world, seed=5, epoch=epoch)
            expected = val_indices(19, 4, rank, world)
            assert np.array_equal(index, expected[0]) and np.array_equal(valid, expected[1])
    with pytest.raises(ValueError, match="every_sample"):
        epoch_plan("pairs", 19, 4, 0, 1, 5, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_sample_pass_reads_each_index_once_with_the_epochs_train_views(imagenet_root, backend):
    epoch, views = 1, 2
    # the train plan of one process covers all 20 images in this epoch: their views by index
    train = train_loader(imagenet_root, backend, views)
    train.set_epoch(epoch)
    by_index = {}
    for batch in train:
        for b, i in enumerate(batch["index"].tolist()):
            by_index[i] = batch["images"][b::len(batch["index"])]  # (views, 3, H, W)
    assert sorted(by_index) == list(range(20))
    for world in (1, 3):
        seen = []
        for rank in range(world):
            loader = train_loader(imagenet_root, backend, views, world=world, rank=rank)
            loader.limit_steps(1)  # cuts the train plan only
            loader.set_plan("every_sample")
            loader.attach_extras(tags)
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader) == len(val_indices(20, 4, rank, world)[0])
            for batch in batches:
                b = len(batch["index"])
                assert batch["valid"].shape == (b,)
                assert batch["tag"][:b, 1].tolist() == batch["index"].tolist()  # extras ride along
                for row in torch.nonzero(batch["valid"]).flatten().tolist():
                    i = int(batch["index"][row])
                    seen.append(i)
                    assert torch.equal(batch["images"][row::b], by_index[i]), (world, rank, i)
        assert sorted(seen) == list(range(20))  # every index once, padding masked
    loader.set_plan("train")
    assert len(loader) == 1 and "valid" not in next(iter(loader))


def test_set_plan_is_for_train_loaders_and_known_plans(imagenet_root):
    cfg = DataConfig(root=str(imagenet_root), backend="torch", image_size=24, val_resize=24, workers=0)
    train, val = build_loaders(cfg, batch_size=4, views=1, seed=0, rank=0, world=1, device=CPU)
    with pytest.raises(ValueError, match="validation"):
        val.set_plan("every_sample")
    with pytest.raises(ValueError, match="train, every_sample"):
        train.set_plan("shuffled")


def test_aug_seed_defaults_to_the_train_seed(imagenet_root):
    from pipeline.config import ConfigError, parse_args

    def loader(aug_seed, seed):
        cfg = DataConfig(root=str(imagenet_root), backend="torch", image_size=16, val_resize=16, workers=0,
                         aug_seed=aug_seed)
        return build_loaders(cfg, batch_size=4, views=1, seed=seed, rank=0, world=1, device=CPU)[0]

    default, explicit, other = loader(-1, 5), loader(5, 5), loader(6, 5)
    assert (default.aug_seed, explicit.aug_seed, other.aug_seed) == (5, 5, 6)
    a, b, c = (next(iter(x)) for x in (default, explicit, other))
    assert torch.equal(a["index"], c["index"])  # train.seed orders the samples, aug_seed draws the views
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])
    with pytest.raises(ConfigError, match="data.aug_seed"):
        parse_args(["--data.aug_seed", "-2"])
