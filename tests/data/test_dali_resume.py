"""Exact resume of both loaders (CPU DALI and torchvision): a fresh loader given the saved state and the
trainer's (epoch, step) yields bit for bit the batches the uninterrupted one did, from any step, for every
format, one and two views. Nothing is restored but the position: the views are replayed (views.py) and DALI
draws no random numbers. Pipelines are built once per run for every format; webdataset validation is exact
over several evaluations."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline.config import DataConfig  # noqa: E402
from pipeline.data import build_loaders  # noqa: E402
from pipeline.data.dali import loader as dali_loader  # noqa: E402
from pipeline.data.dali.webdataset import write_shards  # noqa: E402
from pipeline.data.folder import list_image_folder  # noqa: E402
from pipeline.data.sharding import train_indices, val_indices  # noqa: E402

CPU = torch.device("cpu")
STEPS = 3  # of the 5 an epoch of 20 images has at batch 4: like train.steps_per_epoch, fewer than the loader has
pytestmark = pytest.mark.timeout(300)


def make(root, fmt, views, backend="dali", workers=2, seed=7, aug_seed=-1, batch_size=4, world=1, rank=0):
    cfg = DataConfig(root=str(root), backend=backend, format=fmt, image_size=32, val_resize=36, min_area=0.08,
                     mean=[0.5] * 3, std=[0.25] * 3, workers=workers if backend == "dali" else 0, aug_seed=aug_seed)
    train, val = build_loaders(cfg, batch_size=batch_size, views=views, seed=seed, rank=rank, world=world, device=CPU)
    train.limit_steps(STEPS)
    return train, val


def run(loader, epochs: int, start=(0, 0)):
    """Batches from (epoch, step) `start` to the end of `epochs`, with the state saved after each step, as a
    checkpoint stores it (through JSON)."""
    batches, states = [], {}
    for epoch in range(start[0], epochs):
        loader.set_epoch(epoch, start[1] if epoch == start[0] else 0)
        for step, batch in enumerate(loader, start=loader.start_step):
            batches.append(batch)
            states[epoch, step + 1] = json.loads(json.dumps(loader.state_dict()))
    return batches, states


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def roots(imagenet_root, filelist_root, webdataset_root):
    return {"folder": imagenet_root, "filelist": filelist_root, "webdataset": webdataset_root}


@pytest.mark.parametrize("backend", ["dali", "torch"])
@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("fmt", ["folder", "filelist", "webdataset"])
def test_resume_from_any_step_gives_the_uninterrupted_batches(roots, fmt, views, backend, caplog):
    epochs = 3
    full, states = run(make(roots[fmt], fmt, views, backend)[0], epochs)
    assert len(full) == epochs * STEPS
    assert full[0]["images"].shape == (views * 4, 3, 32, 32)
    assert states[1, 2]["epoch"] == 1 and states[1, 2]["step"] == 2
    # mid-epoch, at an epoch's end, mid-epoch after an epoch boundary
    for saved in [(0, 1), (0, STEPS), (1, 2)]:
        resumed, _ = make(roots[fmt], fmt, views, backend, workers=1)  # DALI: another thread count
        with caplog.at_level(logging.WARNING):
            resumed.load_state_dict(states[saved])
        start = (saved[0] + 1, 0) if saved[1] == STEPS else saved  # where the trainer goes on
        again, _ = run(resumed, epochs, start)
        done = saved[0] * STEPS + saved[1]
        assert len(again) == len(full) - done
        assert all(same(a, b) for a, b in zip(again, full[done:])), f"resumed after {saved}"
    assert "RESUME NOT EXACT" not in caplog.text
    # and the comparison can fail: another aug_seed reads the same samples through other windows, and its
    # resume says so, naming the setting
    other, _ = make(roots[fmt], fmt, views, backend, aug_seed=8)
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(states[1, 2], where="step-5")
    assert "RESUME NOT EXACT" in caplog.text and "step-5" in caplog.text and "aug_seed 7 -> 8" in caplog.text
    rest, _ = run(other, 2, (1, 2))
    assert len(rest) == STEPS - 2
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(rest, full[STEPS + 2:]))
    assert not any(torch.equal(a["images"], b["images"]) for a, b in zip(rest, full[STEPS + 2:]))


def test_a_state_from_other_settings_is_named(imagenet_root, caplog):
    _, states = run(make(imagenet_root, "folder", 1)[0], 1)
    other, _ = make(imagenet_root, "folder", 1, seed=8, backend="torch")
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(states[0, 1], where="step-1")
    assert "RESUME NOT EXACT" in caplog.text and "step-1" in caplog.text
    assert "seed 7 -> 8" in caplog.text and "decoder 'dali-cpu' -> 'torchvision-pil'" in caplog.text


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_pipelines_are_built_once_per_run(roots, fmt, monkeypatch):
    built = []
    build = dali_loader.build_pipeline
    monkeypatch.setattr(dali_loader, "build_pipeline", lambda spec, feed: built.append(spec.train) or build(spec, feed))
    train, val = make(roots[fmt], fmt, 2)
    evaluations = []
    for epoch in range(3):
        train.set_epoch(epoch)
        got = [b["index"] for b in train]
        # each epoch still follows the sampling plan (the epoch's permutation, truncated to STEPS)
        assert torch.equal(torch.stack(got), torch.as_tensor(train_indices(20, 4, 0, 1, 7, epoch)[:STEPS]))
        next(iter(train))  # a consumer that stops early leaves nothing behind for the next epoch
        val.set_epoch(0)
        evaluations.append(list(val))
    assert built == [True, False]  # one train and one val pipeline for 3 epochs and 3 evaluations
    index, valid = val_indices(20, 4, 0, 1)
    for batches in evaluations:
        assert all(same(a, b) for a, b in zip(batches, evaluations[0], strict=True))
        assert torch.equal(torch.stack([b["valid"] for b in batches]), torch.as_tensor(valid))
        assert torch.equal(torch.stack([b["index"] for b in batches]), torch.as_tensor(index))


@pytest.fixture(scope="module")
def odd_shards(imagenet_root, tmp_path_factory):
    """19 samples in tars of 4 (5 tars, the last of 3), in a shuffled order."""
    root = tmp_path_factory.mktemp("odd")
    order = np.random.default_rng(1).permutation(19)
    for split in ("train", "val"):
        listing = list_image_folder(imagenet_root / split)
        write_shards(listing, root / split, per_shard=4, order=order)
    return root


@pytest.mark.parametrize("backend", ["dali", "torch"])
@pytest.mark.parametrize("world", [2, 3])
def test_webdataset_validation_is_exact_over_several_evaluations(odd_shards, world, backend):
    """N = 19 on 2 and 3 ranks (10 + 9, 7 + 6 + 6 samples): every evaluation counts each image exactly once,
    with the same images and masks each time, on the same number of steps on every rank."""
    vals = [make(odd_shards, "webdataset", 1, backend, batch_size=4, world=world, rank=r)[1] for r in range(world)]
    first = None
    for evaluation in range(3):
        counted, steps, batches = [], [], []
        for rank, val in enumerate(vals):
            val.set_epoch(0)
            mine = list(val)
            steps.append(len(mine))
            batches += mine
            index, valid = val_indices(19, 4, rank, world)
            assert np.array_equal(np.stack([b["index"].numpy() for b in mine]), index)
            assert np.array_equal(np.stack([b["valid"].numpy() for b in mine]), valid)
            counted += [i for b in mine for i in b["index"][b["valid"]].tolist()]
        assert len(set(steps)) == 1
        assert sorted(counted) == list(range(19))
        if first is None:
            first = batches
        assert all(same(a, b) for a, b in zip(batches, first, strict=True)), f"evaluation {evaluation + 1}"
