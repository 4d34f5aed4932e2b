"""Batch semantics (pipeline/batch.py): train.batch_size per process, train.global_batch_size for a fixed
global batch, the lr per 256 images of the global batch, the start-up line and the small-batch warning."""
from __future__ import annotations

import logging

import pytest
import torch

from pipeline.batch import SMALL_CUDA_BATCH, describe, plan_batch, small_batch_warning
from pipeline.config import Config, apply, parse_args
from pipeline.errors import BadInputError
from pipeline.trainer import Trainer
from tests.conftest import tiny_run_args


def train(**keys):
    cfg = Config()
    apply(cfg, {"train": keys}, "test")
    return cfg.train


@pytest.mark.parametrize("keys, processes, per_process, global_batch, lr", [
    ({"batch_size": 64, "lr": 0.1}, 1, 64, 64, 0.025),
    ({"batch_size": 64, "lr": 0.1}, 8, 64, 512, 0.2),  # per process: the global batch grows with processes
    ({"global_batch_size": 256, "batch_size": 64, "lr": 0.1}, 8, 32, 256, 0.1),  # the papers' 256 on 8 GPUs
    ({"global_batch_size": 256, "lr": 0.1}, 1, 256, 256, 0.1),
    ({"global_batch_size": 96, "lr": 0.2}, 3, 32, 96, 0.075),
])
def test_plan(keys, processes, per_process, global_batch, lr):
    plan = plan_batch(train(**keys), processes)
    assert (plan.per_process, plan.processes, plan.global_batch) == (per_process, processes, global_batch)
    assert plan.lr == pytest.approx(lr, rel=1e-12)
    assert plan.fixed_global == ("global_batch_size" in keys)


def test_a_global_batch_that_does_not_divide_names_both_numbers():
    with pytest.raises(BadInputError, match="train.global_batch_size 100 is not divisible by 8 processes"):
        plan_batch(train(global_batch_size=100), 8)


def test_startup_line_says_per_process_processes_global_and_lr():
    t = train(global_batch_size=256, batch_size=64, lr=0.1)
    line = describe(plan_batch(t, 4), t)
    assert line.startswith("batch: 64 per process x 4 processes = 256 global")
    assert "train.batch_size (64) is not used" in line and "lr 0.1 = train.lr 0.1 per 256 images x 256 / 256" in line
    t = train(batch_size=48, lr=0.1)
    line = describe(plan_batch(t, 2), t)
    assert "48 per process x 2 processes = 96 global" in line and "train.batch_size is per process" in line
    assert "lr 0.0375 " in line  # 0.1 * 96 / 256


@pytest.mark.parametrize("keys, processes, device, warns", [
    ({"batch_size": SMALL_CUDA_BATCH - 1}, 1, "cuda", True),
    ({"batch_size": SMALL_CUDA_BATCH}, 64, "cuda", False),
    ({"batch_size": 8}, 1, "cpu", False),  # a CPU run is not starved by a small batch
    ({"global_batch_size": 256}, 16, "cuda", True),  # the papers' 256 on 16 GPUs: 16 each
    ({"global_batch_size": 256}, 8, "cuda", False),
])
def test_small_batch_warning_on_cuda_with_the_fix(keys, processes, device, warns):
    message = small_batch_warning(plan_batch(train(**keys), processes), device)
    assert (message is not None) == warns
    if warns and "global_batch_size" in keys:
        assert "run on at most 8 GPUs" in message and "train.global_batch_size 0" in message  # 256 / 32
    elif warns:
        assert f"set train.batch_size to {SMALL_CUDA_BATCH} or more" in message
        assert "--benchmark-batches" in message


def test_trainer_logs_the_batch_line_and_trains_with_its_lr(tmp_path, tiny_teacher, demo_root, caplog):
    cfg, _ = parse_args(tiny_run_args(tmp_path, tiny_teacher, **{"method": "none", "train.batch_size": 4,
                                                               "train.lr": 0.8, "train.tf32": "true"}))
    with caplog.at_level(logging.INFO, logger="pipeline.trainer"):
        trainer = Trainer(cfg)
    assert "batch: 4 per process x 1 process = 4 global" in caplog.text
    assert all(g["lr"] == pytest.approx(0.8 * 4 / 256) for g in trainer.optimizer.param_groups)
    assert next(iter(trainer.train_loader))["labels"].shape == (4,)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # train.tf32 true
    cfg.train.tf32 = False
    Trainer(cfg)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
