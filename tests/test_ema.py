"""pipeline/ema.py: the student EMA is timm's ModelEmaV3 update (against timm's own, on a float64 copy), with
a device flag that makes a skipped step leave it exactly as it was, and timm's warm-up on the global step."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.utils import ModelEmaV3

from pipeline.ema import StudentEma


def perturb(model: torch.nn.Module, step: int):
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.add_(torch.randn(v.shape, generator=torch.Generator().manual_seed(step), dtype=v.dtype))
            else:
                v.add_(1)


@pytest.mark.parametrize("warmup", [False, True])
def test_updates_follow_timm_and_a_skipped_step_moves_nothing(warmup):
    student = timm.create_model("resnet10t", num_classes=4).double()
    ema = StudentEma(student, decay=0.9, warmup=warmup)
    reference = ModelEmaV3(copy.deepcopy(student), decay=0.9, use_warmup=warmup)
    for step in range(1, 6):
        skipped = step == 3  # the trainer has put the student back: its weights are the last step's
        if not skipped:
            perturb(student, step)
        before = {k: v.clone() for k, v in ema.module.state_dict().items()}
        ema.update(student, step, torch.tensor(skipped))
        if skipped:
            assert all(torch.equal(before[k], v) for k, v in ema.module.state_dict().items())
            continue
        reference.update(student, step)
        ours, theirs = ema.module.state_dict(), reference.module.state_dict()
        assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-12
        assert any(not torch.equal(before[k], v) for k, v in ours.items())
    assert not any(p.requires_grad for p in ema.parameters())
