"""Preemption: a signal stops every rank after its step, a checkpoint is written, and `--resume auto`
continues to exactly the weights an uninterrupted run reaches.

In-process (single process, cheap) for where the stop lands; one 2-process launch for the collective stop.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import psutil
import pytest

from pipeline.config import parse_args
from pipeline.methods.base import METHODS, Method
from pipeline.trainer import Trainer
from tests.slurm_runs import (EPOCHS, REPO, STEPS_PER_EPOCH, assert_same_weights, checkpoints,
                              has_checkpoint_after, metrics, reference_run, start_accelerate, student_weights,
                              tail, tiny_args, wait_exit, wait_for)


# ---- in-process: where the stop lands ----------------------------------------------------------------
class SignalAtStep(Method):
    """Adds no loss term; sends this process SIGUSR1 during global step `at`, as Slurm would mid-step."""
    name = "test_signal"
    needs_teacher = False
    at: int | None = None

    def __init__(self, ctx):
        super().__init__(ctx)
        self.calls = 0

    def forward(self, out):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return {}


@pytest.fixture(scope="module", autouse=True)
def signal_method():
    """Registered for this module only; pytest gets its own signal handlers back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    METHODS[SignalAtStep.name] = SignalAtStep
    yield
    del METHODS[SignalAtStep.name]
    for s, handler in saved.items():
        signal.signal(s, handler)


def run_in_process(out: Path, stop_at: int | None, resume: str = "") -> dict:
    SignalAtStep.at = stop_at
    cfg, _ = parse_args(tiny_args(out, method="test_signal", **{
        "data.demo_dir": str(REPO / ".data" / "fashion_mnist_jpeg")}))
    return Trainer(cfg, resume=resume).fit()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_in_process(out, stop_at=None)
    return out / "tiny"


@pytest.mark.parametrize("stop_at", [3, 4, STEPS_PER_EPOCH], ids=["mid-epoch", "on-a-periodic-checkpoint",
                                                                  "last-step-of-the-epoch"])
def test_stop_and_resume_in_process_matches_the_uninterrupted_run(tmp_path, uninterrupted, stop_at):
    summary = run_in_process(tmp_path, stop_at)
    assert summary == {"stopped": True, "global_step": stop_at}
    last = checkpoints(tmp_path / "tiny")[-1]
    assert (last["global_step"], last["epoch"], last["step_in_epoch"]) == (stop_at, 0, stop_at)
    assert not (tmp_path / "tiny" / "student.safetensors").exists()  # not finished

    summary = run_in_process(tmp_path, stop_at=None, resume="auto")
    assert summary["epochs"] == EPOCHS and "stopped" not in summary
    # Each epoch evaluated once across both runs, with the uninterrupted run's results.
    assert evaluations(tmp_path / "tiny") == evaluations(uninterrupted)
    assert_same_weights(student_weights(tmp_path / "tiny"), student_weights(uninterrupted))


def evaluations(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "time"} for m in metrics(run_dir, "eval")]


# ---- two processes: a signal reaching one rank stops all of them --------------------------------------
@pytest.mark.xdist_group("slurm_reference")  # one worker makes the shared uninterrupted run once
@pytest.mark.slow
def test_sigterm_to_one_rank_mid_epoch_stops_every_rank_and_resume_is_exact(tmp_path, tmp_path_factory):
    reference, _, _ = reference_run(tmp_path_factory)  # the same run uninterrupted (two fake nodes)
    run_dir, log = tmp_path / "runs" / "tiny", tmp_path / "run.log"
    launcher = start_accelerate(tiny_args(tmp_path / "runs"), log)
    wait_for(has_checkpoint_after(run_dir, 2), launcher, log, timeout=180, what="a mid-epoch checkpoint")
    workers = [p for p in psutil.Process(launcher.pid).children() if "imagenet.py" in " ".join(p.cmdline())]
    rank1 = next(p for p in workers if p.environ().get("RANK") == "1")
    rank1.send_signal(signal.SIGTERM)  # rank 0 never sees a signal: the stop must be agreed collectively

    # Workers exit 0 after the stop checkpoint, so the launcher reports success rather than a crash.
    assert wait_exit(launcher, log, timeout=120) == 0, tail(log)
    text = log.read_text()
    last = checkpoints(run_dir)[-1]
    stops = re.findall(r"stopped by (SIGTERM|a signal to another process) at step (\d+)", text)
    assert sorted(stops) == [("SIGTERM", str(last["global_step"])),
                             ("a signal to another process", str(last["global_step"]))], tail(log)
    assert last["world_size"] == 2 and last["epoch"] < EPOCHS
    assert 0 < last["step_in_epoch"] < STEPS_PER_EPOCH, (
        f"precondition: the stop should land mid-epoch, got {last} (machine too slow or too fast?)")
    assert not (run_dir / "student.safetensors").exists()

    log2 = tmp_path / "resume.log"
    assert wait_exit(start_accelerate(tiny_args(tmp_path / "runs") + ["--resume", "auto"], log2), log2, 240) == 0
    step = last["global_step"]
    assert f"resumed from {run_dir}/checkpoints/step-{step:09d}" in log2.read_text(), tail(log2)
    assert_same_weights(student_weights(run_dir), student_weights(reference))
