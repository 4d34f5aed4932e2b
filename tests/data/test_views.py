"""pipeline/data/views.py: the replayable crop window and flip of (aug_seed, epoch, index, view).

Checked against a scalar re-implementation of torchvision's RandomResizedCrop.get_params fed with the same
uniforms, against torchvision's own sampler statistically, and for the replay properties: deterministic per
key, different across epoch / view / seed / index, independent of the batch around a sample."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import transforms

from pipeline.data.views import DRAWS, FLIP, LEFT, TOP, uniforms, view_windows

SIZES = [(375, 500), (500, 333), (64, 64), (7, 300), (300, 7), (1, 1), (2, 3), (480, 640)]


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.union1d(a, b)
    cdf = [np.searchsorted(np.sort(x), grid, side="right") / len(x) for x in (a, b)]
    return float(np.abs(cdf[0] - cdf[1]).max())


def ks_limit(n: int, m: int) -> float:
    """The KS statistic that two samples of one distribution exceed with probability 0.001."""
    return 1.95 * math.sqrt((n + m) / (n * m))


def scalar_window(seed, epoch, index, view, height, width, min_area, ratio=(3 / 4, 4 / 3)):
    """One window the way torchvision's get_params writes it, one Python float at a time."""
    def u(draw):
        return float(uniforms(seed, epoch, index, view, draw))

    area = height * width
    for t in range(10):
        target = area * (min_area + (1 - min_area) * u(2 * t))
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u(2 * t + 1))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(u(TOP) * (height - h + 1))
            left = int(u(LEFT) * (width - w + 1))
            return (left, top, w, h), u(FLIP) < 0.5
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return ((width - w) // 2, (height - h) // 2, w, h), u(FLIP) < 0.5


@pytest.mark.parametrize("min_area", [0.08, 0.35, 1.0])
def test_windows_match_the_scalar_torchvision_algorithm(min_area):
    index = np.arange(40) * 7 + 3
    heights = np.array([SIZES[i % len(SIZES)][0] for i in range(40)])
    widths = np.array([SIZES[i % len(SIZES)][1] for i in range(40)])
    for seed, epoch in [(0, 0), (5, 3)]:
        windows, flips = view_windows(seed, epoch, index, heights, widths, views=2, min_area=min_area)
        assert windows.shape == (40, 2, 4) and flips.shape == (40, 2)
        for b in range(40):
            for v in range(2):
                window, flip = scalar_window(seed, epoch, int(index[b]), v, int(heights[b]), int(widths[b]), min_area)
                assert tuple(windows[b, v].tolist()) == window, (b, v, heights[b], widths[b])
                assert bool(flips[b, v]) == flip


def test_the_centre_crop_fallback_is_reached_and_follows_torchvision():
    """A very elongated image (no try fits): the clamped-aspect window, centred, every time."""
    w = view_windows(1, 0, np.arange(50), [10] * 50, [1000] * 50, views=1, min_area=0.9).windows[:, 0]
    assert (w == [(1000 - 13) // 2, 0, 13, 10]).all()  # round(10 * 4/3) = 13 wide, full height
    tall = view_windows(1, 0, np.arange(50), [1000] * 50, [10] * 50, views=1, min_area=0.9).windows[:, 0]
    assert (tall == [0, (1000 - 13) // 2, 10, 13]).all()  # round(10 / (3/4)) = 13 tall


def test_windows_stay_inside_and_reach_every_edge():
    heights, widths = np.full(4000, 12), np.full(4000, 9)
    windows = view_windows(3, 1, np.arange(4000), heights, widths, views=1, min_area=0.08).windows[:, 0]
    x, y, w, h = windows.T
    assert (x >= 0).all() and (y >= 0).all() and (w >= 1).all() and (h >= 1).all()
    assert (x + w <= 9).all() and (y + h <= 12).all()
    # both ends of the position range occur (an exclusive upper bound would never reach x + w == W)
    assert (x == 0).any() and (x + w == 9).any() and (y == 0).any() and (y + h == 12).any()


def test_distributions_agree_with_torchvision_get_params():
    """Area fraction, log aspect, relative position and flips vs torchvision's own sampler (torch RNG):
    a wrong range (area from 0, aspect not log-uniform, a position bound off) moves a KS statistic far."""
    n, height, width = 3000, 375, 500
    torch.manual_seed(0)
    ref = np.array([transforms.RandomResizedCrop.get_params(torch.empty(3, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
                    for _ in range(n)], dtype=np.float64)  # (top, left, h, w)
    windows, flips = view_windows(11, 2, np.arange(n), [height] * n, [width] * n, views=1, min_area=0.08)
    x, y, w, h = windows[:, 0].T.astype(np.float64)
    ours = {"area": w * h / (height * width), "aspect": np.log(w / h),
            "x": x / np.maximum(width - w, 1), "y": y / np.maximum(height - h, 1)}
    theirs = {"area": ref[:, 3] * ref[:, 2] / (height * width), "aspect": np.log(ref[:, 3] / ref[:, 2]),
              "x": ref[:, 1] / np.maximum(width - ref[:, 3], 1), "y": ref[:, 0] / np.maximum(height - ref[:, 2], 1)}
    for key in ours:
        assert ks_distance(ours[key], theirs[key]) < ks_limit(n, n), key
    assert ours["area"].min() >= 0.08 - 0.01 and ours["area"].max() <= 1
    assert abs(flips.mean() - 0.5) < 0.04
    # and the test can fail: a draw with the area range [0.3, 1] is told apart
    narrow = view_windows(11, 2, np.arange(n), [height] * n, [width] * n, views=1, min_area=0.3).windows[:, 0]
    assert ks_distance(narrow[:, 2] * narrow[:, 3] / (height * width), theirs["area"]) > 3 * ks_limit(n, n)


def test_the_hash_gives_independent_uniforms():
    u = uniforms(0, 0, np.arange(20000)[:, None], 0, np.arange(DRAWS)[None, :])
    flat = np.sort(u.ravel())
    assert np.abs(flat - np.arange(1, flat.size + 1) / flat.size).max() < 1.95 / math.sqrt(flat.size)
    # neighbouring indices and neighbouring draws are uncorrelated
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    # the key's fields are not interchangeable
    assert uniforms(1, 2, 3, 4, 5) != uniforms(2, 1, 3, 4, 5)


def test_a_view_is_a_function_of_its_key_alone():
    sizes = np.array(SIZES * 4)
    index = np.arange(len(sizes)) * 13
    a = view_windows(4, 1, index, sizes[:, 0], sizes[:, 1], views=2, min_area=0.08)
    # deterministic
    b = view_windows(4, 1, index, sizes[:, 0], sizes[:, 1], views=2, min_area=0.08)
    assert np.array_equal(a.windows, b.windows) and np.array_equal(a.flips, b.flips)
    # independent of the batch around it (another order, another batch size, one at a time: any rank split)
    perm = np.random.default_rng(0).permutation(len(index))
    c = view_windows(4, 1, index[perm], sizes[perm, 0], sizes[perm, 1], views=2, min_area=0.08)
    assert np.array_equal(c.windows, a.windows[perm]) and np.array_equal(c.flips, a.flips[perm])
    for i in (0, 5, 17):
        one = view_windows(4, 1, index[i:i + 1], sizes[i:i + 1, 0], sizes[i:i + 1, 1], views=2, min_area=0.08)
        assert np.array_equal(one.windows[0], a.windows[i])
    # view 0 of a two-view draw is the one-view draw
    single = view_windows(4, 1, index, sizes[:, 0], sizes[:, 1], views=1, min_area=0.08)
    assert np.array_equal(single.windows[:, 0], a.windows[:, 0])

    def differs(x, y):
        return (x.windows != y.windows).any(axis=-1).mean()

    big = np.full(len(index), 400)  # large images: two draws almost never give the same window
    base = view_windows(4, 1, index, big, big, views=2, min_area=0.08)
    assert differs(base, view_windows(4, 2, index, big, big, views=2, min_area=0.08)) > 0.95  # epoch
    assert differs(base, view_windows(5, 1, index, big, big, views=2, min_area=0.08)) > 0.95  # seed
    assert (base.windows[:, 0] != base.windows[:, 1]).any(axis=-1).mean() > 0.95  # view
    assert differs(base, view_windows(4, 1, index + 1, big, big, views=2, min_area=0.08)) > 0.95  # index


def test_bad_keys_and_sizes_are_refused():
    with pytest.raises(ValueError):
        view_windows(-1, 0, [0], [10], [10], views=1, min_area=0.08)
    with pytest.raises(ValueError):
        view_windows(0, 0, [0], [0], [10], views=1, min_area=0.08)
