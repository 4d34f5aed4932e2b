"""pipeline/mixing.py: the batch mixed on the device, and CE with mixed, smoothed labels.

Against per-sample float64 loops written from the definitions (mixup: lambda x + (1 - lambda) x_partner;
CutMix: the partner's pixels inside the box, one at a time), and CE against the soft target built by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.data.mix_draws import MixSpec, mix_draws
from pipeline.mixing import mix_images, mixed_cross_entropy, partner_rows


def brute_force_mix(images: np.ndarray, lam: np.ndarray, box: np.ndarray) -> np.ndarray:
    out = images.astype(np.float64).copy()
    for r in range(len(images)):
        mate = r + 1 if r % 2 == 0 else r - 1
        x0, y0, x1, y1 = box[r].tolist()
        if x1 > x0 and y1 > y0:  # CutMix
            for y in range(y0, y1):
                for x in range(x0, x1):
                    out[r, :, y, x] = images[mate, :, y, x]
        else:
            out[r] = lam[r] * images[r] + (1 - lam[r]) * images[mate]
    return out


@pytest.mark.parametrize("views", [1, 2])
def test_mixed_images_match_the_definition(views):
    b, h, w = 8, 6, 10
    images = torch.randn(views * b, 3, h, w, generator=torch.Generator().manual_seed(0))
    lam, box = mix_draws(1, 0, np.arange(b), MixSpec(0.8, 1.0), height=h, width=w)
    lam, box = np.tile(lam, views), np.tile(box, (views, 1))  # view-major rows, as the loaders carry them
    boxed = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    assert boxed.any() and (~boxed & (lam < 1)).any()  # both kinds in the batch
    mixed = mix_images(images, torch.from_numpy(lam), torch.from_numpy(box))
    expected = brute_force_mix(images.numpy(), lam, box)
    assert np.abs(mixed.numpy() - expected).max() < 1e-5
    # CutMix rows: each pixel is exactly its own or its mate's; the share kept is lambda
    for r in np.flatnonzero(boxed):
        own = (mixed[r] == images[r]).all(dim=0).double().mean().item()
        assert own == pytest.approx(lam[r], abs=1e-6)


def test_unmixed_rows_are_untouched_and_channels_last_is_kept():
    images = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    lam, box = torch.tensor([1.0, 1.0, 0.3, 1.0]), torch.zeros(4, 4, dtype=torch.int32)
    mixed = mix_images(images, lam, box)
    assert torch.equal(mixed[:2], images[:2])
    assert torch.equal(mixed[3], images[3] + 0.0)  # row 3 is lambda 1: its own pixels
    assert torch.allclose(mixed[2], 0.3 * images[2] + 0.7 * images[3], atol=1e-6)
    assert mixed.is_contiguous(memory_format=torch.channels_last)  # what the networks get on CUDA, no extra copy


def test_partner_rows_swap_mates():
    assert partner_rows(torch.arange(6)).tolist() == [1, 0, 3, 2, 5, 4]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixed_label_cross_entropy_against_a_hand_built_soft_target(smoothing):
    n, c = 6, 5
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 3, 1, 4, 2])
    lam = torch.tensor([1.0, 0.25, 0.6, 0.6, 0.0, 0.9], dtype=torch.float64)
    total = 0.0
    for r in range(n):
        mate = r ^ 1
        target = [smoothing / c] * c  # timm: off value eps / C, on value 1 - eps + eps / C
        target = [lam[r].item() * (t + (1 - smoothing) * (k == labels[r].item()))
                  + (1 - lam[r].item()) * (t + (1 - smoothing) * (k == labels[mate].item())) for k, t in enumerate(target)]
        log_p = torch.log_softmax(logits[r], 0).tolist()
        total += -sum(t * lp for t, lp in zip(target, log_p))
        assert math.isclose(sum(target), 1.0)
    got = mixed_cross_entropy(logits, labels, lam, smoothing).item()
    assert got == pytest.approx(total / n, rel=1e-12)
