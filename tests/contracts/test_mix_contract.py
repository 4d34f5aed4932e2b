"""pipeline/data/mix_draws.py contracts that the recipe tests leave open: which specs mix at all, the draws'
independence (lambda does not move with the centre draws, the mixing stream is not a view's), a Gamma try
with v <= 0 rejected at small alpha, and CutMix boxes on a non-square image against timm's own box code."""
from __future__ import annotations

import numpy as np
import pytest
from timm.data import mixup as timm_mixup

from pipeline.data import mix_draws as md
from pipeline.data.mix_draws import MixSpec, mix_draws
from pipeline.data.views import uniforms
from tests.data.test_mix_draws import scalar_draws


@pytest.mark.parametrize("spec, active", [
    (MixSpec(), False), (MixSpec(mixup_alpha=0.8), True), (MixSpec(cutmix_alpha=1.0), True),
    (MixSpec(0.8, 1.0), True), (MixSpec(0.8, 1.0, mix_prob=0.0), False),
    (MixSpec(cutmix_alpha=1.0, mix_prob=0.0), False),
])
def test_a_spec_mixes_when_an_alpha_and_the_probability_are_positive(spec, active):
    assert spec.active is active


def test_a_spec_without_alphas_leaves_every_sample_unmixed():
    with np.errstate(all="raise"):  # no Beta(0, 0) is drawn behind the scenes (0/0 -> NaN)
        lam, box = mix_draws(3, 1, np.arange(64), MixSpec(), height=16, width=16)
    assert lam.tolist() == [1.0] * 64 and not box.any()


def test_lambda_of_mixup_does_not_move_with_the_decision_and_centre_draws(monkeypatch):
    """Mixup with mix_prob 1 reads APPLY (always < 1) and no SWITCH or centre: shifting those four draws by
    a half (mod 1) must leave every lambda as it was; a Beta variate reading one of them would not."""
    spec, index = MixSpec(mixup_alpha=0.7), np.arange(300)
    reference = mix_draws(2, 5, index, spec, height=8, width=8).lam
    real = md.uniforms

    def shifted(*key):
        u = real(*key).copy()
        u[:, :4] = (u[:, :4] + 0.5) % 1.0
        return u

    monkeypatch.setattr(md, "uniforms", shifted)
    assert np.array_equal(mix_draws(2, 5, index, spec, height=8, width=8).lam, reference)


def test_the_mixing_draws_are_not_a_views_draws(monkeypatch):
    """The crop windows of view v read uniforms(aug_seed, epoch, index, v, k); a method has 1 or 2 views. The
    mixing's numbers must come from another stream, else lambda and the crop of view 0 are tied."""
    seen = []
    real = md.uniforms

    def spy(*key):
        seen.append(real(*key))
        return seen[-1]

    monkeypatch.setattr(md, "uniforms", spy)
    index = np.arange(50)
    mix_draws(4, 2, index, MixSpec(0.8, 1.0), height=8, width=8)
    (drawn,) = seen
    for view in (0, 1):
        crop = uniforms(4, 2, index[:, None], view, np.arange(drawn.shape[1])[None, :])
        assert not np.isclose(drawn, crop).any(axis=1).all(), view


def test_a_gamma_try_with_v_not_positive_is_rejected():
    """At alpha 0.1 about 0.4% of first tries give v = (1 + c x)^3 <= 0 (x below -1 / c): such a try must be
    rejected (the next one decides), as in the textbook loop of tests/data/test_mix_draws.py."""
    spec, index = MixSpec(mixup_alpha=0.1), np.arange(2000)
    lam = mix_draws(9, 0, index, spec, height=4, width=4).lam
    expected = [scalar_draws(9, 0, i, spec, 4, None)[0] for i in index.tolist()]
    assert np.allclose(lam, expected, rtol=0, atol=1e-6)


def test_cutmix_boxes_on_a_tall_narrow_image_match_timm(monkeypatch):
    """h = 64, w = 2: a cut of width 0 (lambda > 3/4) at centre column 0 is an empty box and lambda 1, as timm's
    rand_bbox clips it; the square images of the recipe tests never give a zero width with a non-zero height."""
    h, w, spec = 64, 2, MixSpec(cutmix_alpha=1.0)
    index = np.arange(200)
    lam, box = mix_draws(1, 3, index, spec, height=h, width=w)
    uncut = 0
    for i in index.tolist():
        u = uniforms(1, 3, i, md.MIX_STREAM, np.arange(md.DRAWS)).tolist()
        lam0 = scalar_draws(1, 3, i, MixSpec(mixup_alpha=1.0), 1, None)[0]  # the same Beta(1, 1) draw, uncorrected
        centres = iter([int(u[md.CENTRE_Y] * h), int(u[md.CENTRE_X] * w)])  # timm draws y, then x
        monkeypatch.setattr(timm_mixup.np.random, "randint", lambda low, high, size=None: next(centres))
        (yl, yu, xl, xu), expected = timm_mixup.cutmix_bbox_and_lam((3, h, w), lam0, correct_lam=True)
        assert box[i].tolist() == [xl, yl, xu, yu], i
        assert lam[i] == pytest.approx(expected, abs=1e-6), i
        uncut += xu == xl and yu > yl
    assert uncut > 10  # the case this test is for occurred
