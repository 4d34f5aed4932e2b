"""End to end on the demo with the DALI loader (CPU decode): a training run resumed from a mid-epoch
checkpoint ends with exactly the weights of the uninterrupted run, for a one-view and a two-view method.

In-process Trainer runs, tiny sizes: 2 epochs of 4 steps of 16 images, a checkpoint every 3 steps
(step 3 is mid-epoch 1). That a resume with other views differs (so that this comparison can fail) is
shown, cheaper, at the loader level in test_dali_resume.py.
"""
from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline import checkpoint  # noqa: E402
from pipeline.config import parse_args  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402
from tests.conftest import REPO, tiny_run_args  # noqa: E402

pytestmark = pytest.mark.timeout(600)



def trainer(out, teacher, method, resume=""):
    args = tiny_run_args(out, teacher, **{
        "method": method, "data.backend": "dali", "data.workers": 2, "data.image_size": 32,
        "data.val_resize": 36, "train.checkpoint_every": 3, "train.keep_checkpoints": 10,
        "data.demo_dir": str(REPO / ".data" / "fashion_mnist_jpeg")})
    cfg, _ = parse_args(args)
    return Trainer(cfg, resume=resume)


def weights(t: Trainer) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the student and the methods' modules (heads, memory banks)."""
    return {k: v.detach().clone() for k, v in t.accelerator.unwrap_model(t.model).state_dict().items()}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


@pytest.mark.parametrize("method", ["kd", "dkd+kd"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, tiny_teacher, method, caplog):
    full = trainer(tmp_path / "full", tiny_teacher, method)
    assert full.views == (2 if "dkd" in method else 1)
    full.fit()
    expected = weights(full)
    path = checkpoint.checkpoint_dir(full.run_dir, 3)
    state = checkpoint.read_trainer_state(path)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3)  # mid-epoch; the resumed run crosses an epoch end
    loader_state = checkpoint.read_loader_state(path, 0)  # where the loader was, and with what settings
    assert (loader_state["epoch"], loader_state["step"], loader_state["decoder"]) == (0, 3, "dali-cpu")
    with caplog.at_level(logging.WARNING):
        resumed = trainer(tmp_path / "resumed", tiny_teacher, method, resume=str(path))
        assert resumed.global_step == 3
        resumed.fit()
    assert "RESUME NOT EXACT" not in caplog.text
    assert max_difference(weights(resumed), expected) == 0.0
