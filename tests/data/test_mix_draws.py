"""pipeline/data/mix_draws.py and the pair plans (sharding.py): mixup / CutMix parameters as pure functions
of (aug_seed, epoch, index), partners as pair-mates.

Checked against timm's own box code (`cutmix_bbox_and_lam`, its random centre replaced by the key's), a
scalar re-implementation of the draws one sample at a time (Marsaglia-Tsang written out as a loop),
numpy's Beta sampler statistically, the box inside the image and its area against lambda, and the plans
by brute force over the epoch's permutation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.data import mixup as timm_mixup

from pipeline.data import sharding
from pipeline.data.mix_draws import (APPLY, BETA_FIRST, CENTRE_X, CENTRE_Y, DRAWS, GAMMA_DRAWS, GAMMA_TRIES,
                                     MIX_STREAM, MixSpec, mix_draws)
from pipeline.data.views import uniforms
from tests.data.test_views import ks_distance, ks_limit

SPECS = [MixSpec(0.8, 1.0, 1.0, 0.5), MixSpec(0.2, 0.0, 0.7, 0.5), MixSpec(0.0, 1.0, 1.0, 0.5),
         MixSpec(2.0, 0.3, 0.5, 0.25)]


def scalar_gamma(alpha: float, u) -> float:
    """One Gamma(alpha) variate from the uniforms u(0..), the textbook loop: the first accepted try wins."""
    d = alpha + 1 - 1 / 3
    c = 1 / math.sqrt(9 * d)
    value = d
    for t in range(GAMMA_TRIES):
        x = math.sqrt(-2 * math.log(1 - u(3 * t))) * math.cos(2 * math.pi * u(3 * t + 1))
        v = (1 + c * x) ** 3
        if v > 0 and math.log(1 - u(3 * t + 2)) < 0.5 * x * x + d - d * v + d * math.log(v):
            value = d * v
            break
    return value * (1 - u(3 * GAMMA_TRIES)) ** (1 / alpha)


def scalar_draws(seed, epoch, index, spec: MixSpec, size: int, monkeypatch) -> tuple[float, tuple]:
    """(lambda, (x0, y0, x1, y1)) of one sample: timm's elem-mode decisions one at a time, and timm's
    `cutmix_bbox_and_lam` for the box and lambda's correction, its centre draw replaced by the key's."""
    drawn = uniforms(seed, epoch, index, MIX_STREAM, np.arange(DRAWS)).tolist()  # the key's numbers, then scalars

    def u(k):
        return drawn[k]

    def beta(alpha):
        g1 = scalar_gamma(alpha, lambda k: u(BETA_FIRST + k))
        g2 = scalar_gamma(alpha, lambda k: u(BETA_FIRST + GAMMA_DRAWS + k))
        return g1 / (g1 + g2)

    if u(APPLY) >= spec.mix_prob:
        return 1.0, (0, 0, 0, 0)
    cut = spec.mixup_alpha <= 0 or (spec.cutmix_alpha > 0 and u(1) < spec.switch_prob)
    lam = beta(spec.cutmix_alpha if cut else spec.mixup_alpha)
    if not cut:
        return lam, (0, 0, 0, 0)
    centres = iter([int(u(CENTRE_Y) * size), int(u(CENTRE_X) * size)])  # timm draws y, then x
    monkeypatch.setattr(timm_mixup.np.random, "randint", lambda low, high, size=None: next(centres))
    (yl, yu, xl, xu), lam = timm_mixup.cutmix_bbox_and_lam((3, size, size), lam, correct_lam=True)
    return lam, (xl, yl, xu, yu)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"mix{s.mixup_alpha}-cut{s.cutmix_alpha}-p{s.mix_prob}")
def test_draws_match_timm_and_a_scalar_reimplementation(spec, monkeypatch):
    size, index = 32, np.arange(200)
    params = mix_draws(7, 3, index, spec, height=size, width=size)
    for i in index.tolist():
        lam, box = scalar_draws(7, 3, i, spec, size, monkeypatch)
        assert params.box[i].tolist() == list(box), i
        assert params.lam[i] == pytest.approx(lam, abs=1e-6), i


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: f"mix{s.mixup_alpha}-cut{s.cutmix_alpha}")
def test_box_inside_the_image_and_lambda_its_complement(spec):
    h, w = 24, 40
    lam, box = mix_draws(1, 0, np.arange(5000), spec, height=h, width=w)
    x0, y0, x1, y1 = box.T.astype(np.int64)
    assert ((0 <= x0) & (x0 <= x1) & (x1 <= w) & (0 <= y0) & (y0 <= y1) & (y1 <= h)).all()
    boxed = (x1 > x0) & (y1 > y0)
    area = (x1 - x0) * (y1 - y0)
    assert np.allclose(lam[boxed], 1 - area[boxed] / (h * w), atol=1e-7)  # timm's correct_lam
    assert ((lam >= 0) & (lam <= 1)).all()
    if spec.cutmix_alpha > 0:
        assert boxed.mean() > 0.3 and (x0[boxed] == 0).any() and (x1[boxed] == w).any()  # clipped at the borders


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_lambda_is_beta_distributed(alpha):
    n = 20000
    lam = mix_draws(5, 1, np.arange(n), MixSpec(mixup_alpha=alpha), height=8, width=8).lam.astype(np.float64)
    reference = np.random.default_rng(0).beta(alpha, alpha, n)
    assert ks_distance(lam, reference) < ks_limit(n, n)
    assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)  # Beta(a, a): 1 / (4 (2a + 1))


def test_apply_and_switch_probabilities():
    n = 20000
    lam, box = mix_draws(2, 0, np.arange(n), MixSpec(0.8, 1.0, mix_prob=0.6, switch_prob=0.25), height=16, width=16)
    mixed = lam < 1  # a Beta draw is 1 with probability 0; an applied CutMix with a zero box is rare
    boxed = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    tolerance = 4 * math.sqrt(0.25 / n)  # four binomial standard errors
    assert abs(mixed.mean() - 0.6) < tolerance + 0.01
    assert abs(boxed.sum() / mixed.sum() - 0.25) < 2 * tolerance + 0.01


def test_draws_are_pure_functions_of_the_key():
    spec = SPECS[0]
    a = mix_draws(4, 2, [5, 9, 11], spec, height=32, width=32)
    b = mix_draws(4, 2, [11, 0, 9, 5], spec, height=32, width=32)
    assert a.lam.tolist() == [b.lam[3], b.lam[2], b.lam[0]] and (a.box == b.box[[3, 2, 0]]).all()
    for other in (mix_draws(4, 3, [5, 9, 11], spec, height=32, width=32),  # another epoch
                  mix_draws(5, 2, [5, 9, 11], spec, height=32, width=32)):  # another aug_seed
        assert not np.array_equal(a.lam, other.lam)


# ---- pair plans ----------------------------------------------------------------------------------------------
def mates(num_samples: int, aug_seed: int, epoch: int) -> dict[int, int]:
    """Brute force: the epoch's mate permutation (its own stream of (aug_seed, epoch)), positions 2k and 2k + 1."""
    perm = np.random.default_rng([aug_seed, epoch, sharding.MATES]).permutation(num_samples).tolist()
    return {perm[p]: perm[p ^ 1] for p in range(num_samples - num_samples % 2)}


@pytest.mark.parametrize("num_samples, batch, world", [(40, 4, 1), (41, 4, 2), (37, 6, 3), (100, 8, 4), (9, 2, 4)])
def test_train_pairs_keep_mates_side_by_side_on_any_world(num_samples, batch, world):
    for epoch in range(3):
        expected = mates(num_samples, 7, epoch)
        plans = [sharding.train_pair_indices(num_samples, batch, r, world, 11, epoch, aug_seed=7) for r in range(world)]
        steps = sharding.pair_steps(num_samples, batch, world)
        assert all(p.shape == (steps, batch) for p in plans)
        seen = np.concatenate([p.ravel() for p in plans]).tolist()
        assert len(seen) == len(set(seen))
        for plan in plans:
            rows = plan.reshape(-1, 2)  # positions 2j, 2j + 1 of every batch
            assert all(expected[a] == b for a, b in rows.tolist())
        assert steps == (num_samples // 2 // world) // (batch // 2)


def test_mates_follow_the_views_key_and_the_order_follows_train_seed():
    """A sample's mate (so its mixed image, and a cache made with mixing) is the same for every train.seed; the
    order of the pairs, and so the batches, is not; another aug_seed or epoch gives other mates."""
    def plan(seed, aug_seed, epoch=0):
        return sharding.epoch_plan("train_pairs", 64, 8, 0, 1, seed, epoch, aug_seed)[0]

    def pairs(p):
        return {tuple(sorted(r)) for r in p.reshape(-1, 2).tolist()}

    assert pairs(plan(0, 3)) == pairs(plan(1, 3)) and not np.array_equal(plan(0, 3), plan(1, 3))
    assert pairs(plan(0, 3)) != pairs(plan(0, 4)) and pairs(plan(0, 3)) != pairs(plan(0, 3, epoch=1))
    with pytest.raises(ValueError, match="aug_seed"):
        sharding.epoch_plan("every_pair", 64, 8, 0, 1, 0, 0)


@pytest.mark.parametrize("num_samples, batch, world", [(10, 4, 1), (11, 4, 2), (7, 2, 3), (1, 2, 2), (23, 6, 4)])
def test_every_pair_covers_every_sample_once_with_its_mate(num_samples, batch, world):
    epoch = 2
    expected = mates(num_samples, 3, epoch)
    counted = []
    for r in range(world):
        index, valid = sharding.epoch_plan("every_pair", num_samples, batch, r, world, 99, epoch, aug_seed=3)
        assert index.shape == (sharding.every_pair_steps(num_samples, batch, world), batch)
        counted += index[valid].tolist()
        for (a, b), (va, vb) in zip(index.reshape(-1, 2).tolist(), valid.reshape(-1, 2).tolist()):
            if va and vb:
                assert expected[a] == b
            elif va:  # the odd sample, paired with itself
                assert a == b and a not in expected and num_samples % 2
    assert sorted(counted) == list(range(num_samples))


@pytest.mark.parametrize("num_samples, world", [(11, 2), (12, 3), (9, 1)])
def test_loader_valid_mask_matches_the_plan(num_samples, world):
    """PlannedLoader.valid (computed on the device from a formula) against the plan's own mask."""
    from pipeline.data.planned import PlannedLoader

    for rank in range(world):
        loader = PlannedLoader.__new__(PlannedLoader)  # only the plan's fields: no dataset needed
        loader.num_samples, loader.batch_size, loader.rank, loader.world = num_samples, 4, rank, world
        loader.plan_kind, loader.mix, loader._arange = "every_sample", MixSpec(1.0), torch.arange(4)
        loader.seed, loader.aug_seed, loader.epoch, loader.max_steps = 0, 2, 1, None
        _, valid = loader.epoch_plan()
        assert len(valid) == loader.steps()
        for step in range(loader.steps()):
            assert loader.valid(step).tolist() == valid[step].tolist()
