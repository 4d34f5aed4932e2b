"""Replayable RandAugment (pipeline/data/rand_augment.py, pipeline/data/dali/rand_augment.py).

The draws: pure functions of (aug_seed, epoch, index, view), uniform over the 14 operations, fair signs.
The backends: with the same operation and sign forced on every sample, DALI's graph and torchvision's
operations give the same pixels up to what their implementations explain (per-operation bounds, in grey
levels of 0..255: the sign conventions, magnitudes and fills are aligned, so a wrong sign or magnitude
on either side is tens of grey levels), and the operation visibly changes the crop. Replay: a DALI loader
restarted mid-epoch yields exactly the pixels of the uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline.config import DataConfig  # noqa: E402
from pipeline.data import build_loaders, planned, torch_loader  # noqa: E402
from pipeline.data.rand_augment import FIRST_DRAW, OPS, RandAugmentSpec, rand_augment_draws  # noqa: E402
from pipeline.data.views import uniforms  # noqa: E402

CPU = torch.device("cpu")
SIZE = 48
pytestmark = pytest.mark.timeout(300)
# mean |DALI - torchvision| per image in grey levels (measured 0.1-0.9; Equalize ~4: DALI follows OpenCV's
# histogram formula, PIL its own); a crossed sign or another magnitude gives 20-60 (docs/performance.md)
BOUND = {name: 2.0 for name in OPS} | {"Equalize": 8.0}


def test_draws_are_pure_uniform_and_per_view():
    ops, negate = rand_augment_draws(3, 1, np.arange(6000), views=2, num_ops=2)
    assert ops.shape == negate.shape == (6000, 2, 2)
    counts = np.bincount(ops.ravel(), minlength=len(OPS))
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    assert abs(negate.mean() - 0.5) < 0.02
    assert (ops[:, 0] != ops[:, 1]).mean() > 0.85  # each view draws its own
    # scalar re-derivation of one entry: operation k of view v uses draw FIRST_DRAW + 2k, its sign + 1
    i, v, k = 17, 1, 1
    assert ops[i, v, k] == int(uniforms(3, 1, i, v, FIRST_DRAW + 2 * k) * len(OPS))
    assert negate[i, v, k] == int(uniforms(3, 1, i, v, FIRST_DRAW + 2 * k + 1) < 0.5)
    again, _ = rand_augment_draws(3, 1, [17, 4], views=2, num_ops=2)
    assert (again[0] == ops[17]).all() and (again[1] == ops[4]).all()


def forced(epoch, index):
    """Sample i at epoch e: operation i % 14, negated when (i // 14 + e) is odd: at epoch 0 the 20 images
    give every operation, and the geometric ones (numbers 1-5, whose sign conventions differ between the
    libraries) with both signs."""
    index = np.asarray(index)
    return (index % len(OPS)).astype(np.int32), ((index // len(OPS) + epoch) % 2).astype(np.int32)


def loader(root, backend, rand_augment: bool):
    cfg = DataConfig(root=str(root), backend=backend, image_size=SIZE, val_resize=SIZE, min_area=1.0,
                     mean=[0.0] * 3, std=[1 / 255] * 3, workers=1 if backend == "dali" else 0)
    train = build_loaders(cfg, batch_size=4, views=1, seed=0, rank=0, world=1, device=CPU)[0]
    train.set_augment(None, RandAugmentSpec(1, 9) if rand_augment else None)
    return train


def images(train, epoch) -> dict[int, torch.Tensor]:
    train.set_epoch(epoch)
    return {i: img for batch in train for i, img in zip(batch["index"].tolist(), batch["images"])}


def test_dali_and_torchvision_apply_the_same_operation(imagenet_root, monkeypatch):
    def draws(aug_seed, epoch, index, *, views, num_ops):
        ops, negate = forced(epoch, index)
        return (np.broadcast_to(ops[:, None, None], (len(ops), views, num_ops)).copy(),
                np.broadcast_to(negate[:, None, None], (len(ops), views, num_ops)).copy())

    monkeypatch.setattr(planned, "rand_augment_draws", draws)
    monkeypatch.setattr(torch_loader, "rand_augment_draws", draws)
    dali, ref, plain = loader(imagenet_root, "dali", True), loader(imagenet_root, "torch", True), \
        loader(imagenet_root, "torch", False)
    worst = {}
    for epoch in (0,):
        a, b, base = images(dali, epoch), images(ref, epoch), images(plain, epoch)
        assert a.keys() == b.keys() and len(a) == 20
        for i in a:
            name = OPS[forced(epoch, [i])[0][0]]
            gap = (a[i] - b[i]).abs().mean().item()
            worst[name] = max(worst.get(name, 0.0), gap)
            assert gap < BOUND[name], (name, i, epoch, gap)
            if name not in ("Identity", "Posterize"):  # posterize at bin 9 keeps 7 bits: under a grey level
                assert (b[i] - base[i]).abs().mean().item() > 1.0, (name, i)  # the operation did something
            else:
                assert name != "Identity" or torch.equal(b[i], base[i])
    assert set(worst) == set(OPS)
    assert {(OPS[forced(0, [i])[0][0]], forced(0, [i])[1][0]) for i in range(20)} >= {
        (name, sign) for name in OPS[1:6] for sign in (0, 1)}


def test_dali_rand_augment_replays_from_a_mid_epoch_start(imagenet_root):
    train = loader(imagenet_root, "dali", True)
    train.set_augment(None, RandAugmentSpec(2, 12))
    full = [b["images"].clone() for b in (train.set_epoch(3), train)[1]]
    train.set_epoch(3, start_step=2)
    resumed = [b["images"].clone() for b in train]
    assert len(resumed) == len(full) - 2
    assert all(torch.equal(x, y) for x, y in zip(resumed, full[2:]))
    train.set_augment(None, RandAugmentSpec(2, 13))  # another magnitude: other pixels (the check can fail)
    train.set_epoch(3, start_step=2)
    assert not torch.equal(next(iter(train))["images"], full[2])
