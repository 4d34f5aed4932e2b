"""Exact resume of the DALI loaders (CPU DALI): after `load_state_dict(state_dict())` a fresh loader yields
bit for bit the batches the uninterrupted one did, from any step, for every reader, one and two views;
file-reader pipelines are built once per run."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline.config import DataConfig  # noqa: E402
from pipeline.data.dali import DaliLoader, build_dali_loaders  # noqa: E402
from pipeline.data.sharding import train_indices, val_indices  # noqa: E402

CPU = torch.device("cpu")
STEPS = 3  # of the 5 an epoch of 20 images has at batch 4: like train.steps_per_epoch, fewer than the loader has
pytestmark = pytest.mark.timeout(300)


def make(root, fmt, views, workers=2, seed=7, batch_size=4):
    cfg = DataConfig(root=str(root), backend="dali", format=fmt)
    train, val = build_dali_loaders(cfg, Path(root), views=views, batch_size=batch_size, image_size=32, val_resize=36,
                                    min_area=0.08, mean=[0.5] * 3, std=[0.25] * 3, workers=workers, seed=seed,
                                    rank=0, world=1, device=CPU)
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


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("fmt", ["folder", "filelist", "webdataset"])
def test_resume_from_any_step_gives_the_uninterrupted_batches(roots, fmt, views, caplog):
    epochs = 3
    full, states = run(make(roots[fmt], fmt, views)[0], epochs)
    assert len(full) == epochs * STEPS
    assert full[0]["images"].shape == (views * 4, 3, 32, 32)
    # mid-epoch, at an epoch's end, mid-epoch after an epoch boundary
    for saved in [(0, 1), (0, STEPS), (1, 2)]:
        resumed, _ = make(roots[fmt], fmt, views, workers=1)  # another thread count: DALI's draws do not depend on it
        with caplog.at_level(logging.WARNING):
            resumed.load_state_dict(states[saved])
        start = (saved[0] + 1, 0) if saved[1] == STEPS else saved  # where the trainer goes on
        again, _ = run(resumed, epochs, start)
        done = saved[0] * STEPS + saved[1]
        assert len(again) == len(full) - done
        assert all(same(a, b) for a, b in zip(again, full[done:])), f"resumed after {saved}"
    assert "RESUME NOT EXACT" not in caplog.text
    # and the comparison can fail: a fresh loader without the state has the sample order (file readers)
    # but not the random draws, and says so
    fresh, _ = make(roots[fmt], fmt, views)
    with caplog.at_level(logging.WARNING):
        fresh.load_state_dict(None)
    assert "RESUME NOT EXACT" in caplog.text
    other, _ = run(fresh, 2, (1, 2))  # the rest of epoch 2
    assert len(other) == STEPS - 2
    assert not any(torch.equal(a["images"], b["images"]) for a, b in zip(other, full[STEPS + 2:]))
    if fmt != "webdataset":
        assert all(torch.equal(a["index"], b["index"]) for a, b in zip(other, full[STEPS + 2:]))


def test_a_state_from_another_pipeline_is_refused_naming_the_difference(imagenet_root, caplog):
    _, states = run(make(imagenet_root, "folder", 1)[0], 1)
    other, _ = make(imagenet_root, "folder", 1, seed=8)
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(states[0, 1], where="step-1")
    assert "RESUME NOT EXACT" in caplog.text and "step-1" in caplog.text and "seed 7 -> 8" in caplog.text


def test_file_reader_pipelines_are_built_once_per_run(imagenet_root, monkeypatch):
    built = []
    build = DaliLoader._build
    monkeypatch.setattr(DaliLoader, "_build", lambda self, *a: built.append(self.train) or build(self, *a))
    train, val = make(imagenet_root, "folder", 2)
    evaluations = []
    for epoch in range(3):
        train.set_epoch(epoch)
        got = [b["index"] for b in train]
        # each epoch still follows the sampling plan (the epoch's permutation, truncated to STEPS)
        assert torch.equal(torch.stack(got), torch.as_tensor(train_indices(20, 4, 0, 1, 7, epoch)[:STEPS]))
        val.set_epoch(0)
        evaluations.append(list(val))
    assert built == [True, False]  # one train and one val pipeline for 3 epochs and 3 evaluations
    index, valid = val_indices(20, 4, 0, 1)
    for batches in evaluations:
        assert all(same(a, b) for a, b in zip(batches, evaluations[0]))
        assert torch.equal(torch.stack([b["valid"] for b in batches]), torch.as_tensor(valid))
        assert torch.equal(torch.stack([b["index"] for b in batches]), torch.as_tensor(index))


def test_webdataset_validation_is_periodic_without_rebuilds(webdataset_root, monkeypatch):
    built = []
    build = DaliLoader._build
    monkeypatch.setattr(DaliLoader, "_build", lambda self, *a: built.append(self.train) or build(self, *a))
    _, val = make(webdataset_root, "webdataset", 1, batch_size=3)  # 20 samples: 7 steps, the last padded
    first, second = list(val), list(val)
    assert len(first) == 7 and all(same(a, b) for a, b in zip(first, second))
    assert built == [False]
    assert [int(b["valid"].sum()) for b in first] == [3] * 6 + [2]
