"""A node without usable CUDA: one CPU process is allowed (and says so loudly); several processes without an
explicit CPU choice, train.precision bf16 or train.device cuda are errors naming what torch reports."""
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import device
from pipeline.config import Config, apply

REPO = Path(__file__).resolve().parents[1]


def config(**train) -> Config:
    cfg = Config()
    apply(cfg, {"train": train}, "test")
    return cfg


@pytest.fixture
def no_cuda(monkeypatch):
    """CUDA unavailable whatever the machine has; one process, no CPU choice in the environment."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("WORLD_SIZE", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(device, "_warned", False)
    return monkeypatch


def test_one_cpu_process_is_allowed_and_logged_once(no_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.device"):
        assert device.use_cpu(config()) is True
        assert device.use_cpu(config(precision="fp32")) is True
    loud = [r.getMessage() for r in caplog.records if "FALLBACK" in r.getMessage()]
    assert len(loud) == 1 and "torch.cuda.is_available() is False" in loud[0], loud


@pytest.mark.parametrize("train,env,needle", [
    ({}, {"WORLD_SIZE": "2"}, "2 processes were started"),
    ({"precision": "bf16"}, {}, "train.precision is bf16"),
    ({"device": "cuda"}, {}, "train.device is cuda"),
    ({"precision": "bf16"}, {"ACCELERATE_USE_CPU": "1"}, "train.precision is bf16"),  # bf16 needs CUDA anyway
])
def test_needing_cuda_without_it_is_an_error(no_cuda, train, env, needle):
    for k, v in env.items():
        no_cuda.setenv(k, v)
    with pytest.raises(device.CudaUnavailableError, match="CUDA is") as err:
        device.use_cpu(config(**train))
    assert needle in str(err.value)
    if "ACCELERATE_USE_CPU" not in env:
        assert "torch.cuda.is_available() is False" in str(err.value)


@pytest.mark.parametrize("train,env", [({"device": "cpu"}, {"WORLD_SIZE": "2"}),
                                       ({}, {"WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "1"})])
def test_explicit_cpu_allows_several_processes(no_cuda, train, env):
    for k, v in env.items():
        no_cuda.setenv(k, v)
    assert device.use_cpu(config(**train)) is True


def test_a_multi_process_launch_without_cuda_fails_fast(tmp_path):
    """Rank 0 of a 2-process launch (torchrun's env) with CUDA hidden and no CPU choice: it exits with the
    message before creating the process group (which would wait for rank 1)."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(CUDA_VISIBLE_DEVICES="", WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT="29555", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    start = time.time()
    proc = subprocess.run([sys.executable, "launch/imagenet.py", "--train.output_dir", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "CUDA is unavailable" in proc.stderr and "2 processes were started" in proc.stderr, proc.stderr[-2000:]
    assert "torch.cuda.is_available() is False" in proc.stderr
    assert time.time() - start < 120
