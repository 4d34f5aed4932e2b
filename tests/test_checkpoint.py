"""Checkpoints that survive damage and failures, in single-process in-test Trainer runs (no launcher).

One short run writes step-1 .. step-4 (checkpoint_every 1, the last 3 kept); each test damages a copy.
"""
from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import accelerate.checkpointing
import pytest
import torch
from safetensors.torch import load_file

from pipeline import checkpoint
from pipeline.config import parse_args
from pipeline.methods.base import METHODS, Method
from pipeline.trainer import NonFiniteLossError, Trainer
from tests.slurm_runs import REPO, metrics, tiny_args

STEPS = 4



def make_trainer(output_dir: Path, resume: str = "", **overrides) -> Trainer:
    values = {"train.epochs": 1, "train.steps_per_epoch": STEPS, "train.checkpoint_every": 1,
              "data.demo_dir": str(REPO / ".data" / "fashion_mnist_jpeg"), **overrides}
    cfg, _ = parse_args(tiny_args(output_dir, **values))
    return Trainer(cfg, resume=resume)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    make_trainer(out).fit()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "out")
    return tmp_path / "out"


def steps(out: Path) -> list[int]:
    return [checkpoint.read_trainer_state(p)["global_step"] for p in checkpoint.list_checkpoints(out / "tiny")]


def ckpt(out: Path, step: int) -> Path:
    return checkpoint.checkpoint_dir(out / "tiny", step)


def student_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def test_the_last_k_complete_checkpoints_are_kept(finished_run):
    assert steps(finished_run) == [2, 3, 4]  # step 1 pruned (keep_checkpoints 3)
    assert all(checkpoint.is_complete(p) for p in checkpoint.list_checkpoints(finished_run / "tiny"))


def truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path):
    path.write_bytes(bytes(range(256)) * (path.stat().st_size // 256) + b"\x07" * (path.stat().st_size % 256))


DAMAGE = {
    "no COMPLETE manifest": lambda d: (d / checkpoint.COMPLETE).unlink(),
    "truncated model": lambda d: truncate(d / "model.safetensors"),
    "truncated optimizer": lambda d: truncate(d / "optimizer.bin"),
    "garbage model, right size": lambda d: garbage(d / "model.safetensors"),
    "garbage optimizer, right size": lambda d: garbage(d / "optimizer.bin"),
    "garbage scheduler, right size": lambda d: garbage(d / "custom_checkpoint_0.pkl"),
    "garbage RNG state, right size": lambda d: garbage(d / "random_states_0.pkl"),
    "garbage trainer state, right size": lambda d: garbage(d / checkpoint.STATE_FILE),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(run_copy, damage, caplog):
    DAMAGE[damage](ckpt(run_copy, 4))
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(run_copy, resume="auto")
    assert trainer.global_step == 3
    assert str(ckpt(run_copy, 4)) in caplog.text  # the warning names the skipped checkpoint
    # Everything comes from step 3, even when step 4 had been half-loaded before its damaged file failed.
    saved = load_file(str(ckpt(run_copy, 3) / "model.safetensors"))
    loaded = student_params(trainer)
    for name, value in saved.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)


def test_explicit_resume_of_a_damaged_checkpoint_is_an_error(run_copy):
    truncate(ckpt(run_copy, 4) / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        make_trainer(run_copy, resume=str(ckpt(run_copy, 4)))


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(run_copy):
    for step in (2, 3, 4):
        garbage(ckpt(run_copy, step) / "optimizer.bin")
    with pytest.raises(RuntimeError, match="no older complete checkpoint"):
        make_trainer(run_copy, resume="auto")


def half_written_then_disk_full(real_save):
    """accelerate's writer: the optimizer file gets half its bytes, then the disk is full."""
    def save(obj, f, *args, **kwargs):
        if Path(f).name == "optimizer.bin":
            Path(f).write_bytes(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)
    return save


def disk_full_at_the_manifest(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["accelerate save_state", "manifest and fsync"])
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(run_copy, monkeypatch, where):
    trainer = make_trainer(run_copy, resume="auto", **{"train.epochs": 2})  # continues after step 4
    if where == "accelerate save_state":
        monkeypatch.setattr(accelerate.checkpointing, "save", half_written_then_disk_full(accelerate.checkpointing.save))
    else:
        monkeypatch.setattr(checkpoint, "_fsync_tree", disk_full_at_the_manifest)
    with pytest.raises(checkpoint.CheckpointWriteError) as failure:
        trainer.fit()  # the first checkpoint, at step 5, fails
    message = str(failure.value)
    assert "step-000000005" in message and "No space left on device" in message
    assert f"previous checkpoint {ckpt(run_copy, 4)} is intact" in message and "disk" in message
    assert isinstance(failure.value.__cause__, OSError)
    assert steps(run_copy) == [2, 3, 4]
    assert not list((run_copy / "tiny" / "checkpoints").glob(".tmp-*"))  # no debris left behind
    assert make_trainer(run_copy, resume="auto").global_step == 4  # intact and loadable

    monkeypatch.undo()  # space freed: the same trainer checkpoints again
    trainer.save()
    assert steps(run_copy)[-1] == 5 and checkpoint.is_complete(ckpt(run_copy, 5))


def test_debris_of_a_killed_save_is_ignored_and_removed(run_copy):
    debris = run_copy / "tiny" / "checkpoints" / ".tmp-step-000000009"
    debris.mkdir()
    (debris / "model.safetensors").write_bytes(b"\0" * 100)
    assert checkpoint.find_latest(run_copy / "tiny") == ckpt(run_copy, 4)
    make_trainer(run_copy, resume="auto", **{"train.epochs": 2}).fit()  # saves steps 5..8
    assert not debris.exists()
    assert steps(run_copy) == [6, 7, 8]


# ---- non-finite losses -------------------------------------------------------------------------------
class NaNTerm(Method):
    """A term that is NaN at the global steps in `at` (through the graph, or a constant NaN whose gradient
    is finite): a method defined by the test, so the product has no test-only path."""
    name = "test_nan"
    needs_teacher = False
    at: set[int] = set()
    constant = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.calls = 0

    def forward(self, out):
        self.calls += 1
        if self.calls not in self.at:
            return {"nan_term": out.student.logits.sum() * 0}
        nan = torch.tensor(float("nan"))
        return {"nan_term": nan if self.constant else out.student.logits.mean() * nan}


@pytest.fixture
def nan_method():
    """Registered for one test only: other tests may iterate over every registered method."""
    METHODS[NaNTerm.name] = NaNTerm
    yield NaNTerm
    del METHODS[NaNTerm.name]
    NaNTerm.at, NaNTerm.constant = set(), False


@pytest.mark.parametrize("constant", [False, True], ids=["nan-gradients", "nan-loss-finite-gradients"])
def test_nonfinite_loss_stops_naming_the_step_and_the_term(tmp_path, nan_method, constant):
    nan_method.at, nan_method.constant = {3}, constant
    trainer = make_trainer(tmp_path, method="test_nan")
    with pytest.raises(NonFiniteLossError) as failure:
        trainer.fit()
    message = str(failure.value)
    assert "step 3 " in message and "loss terms nan_term;" in message  # ce was finite: not blamed
    assert f"last good checkpoint {ckpt(tmp_path, 2)} is kept" in message
    assert steps(tmp_path) == [1, 2]
    assert all(torch.isfinite(v).all() for v in load_file(str(ckpt(tmp_path, 2) / "model.safetensors")).values())


def test_skip_nonfinite_counts_skipped_steps_in_the_log(tmp_path, nan_method):
    nan_method.at = {2, 3}
    summary = make_trainer(tmp_path, method="test_nan", **{"train.skip_nonfinite": True}).fit()
    assert summary["skipped_steps"] == 2
    assert [r["step"] for r in metrics(tmp_path / "tiny", "skip")] == [2, 3]
    assert [r["skipped_steps"] for r in metrics(tmp_path / "tiny", "skip")] == [1, 2]


def test_skipped_steps_leave_the_weights_untouched(tmp_path, nan_method):
    nan_method.at = set(range(1, STEPS + 1))  # every step non-finite: no update may happen at all
    trainer = make_trainer(tmp_path, method="test_nan", **{"train.skip_nonfinite": True})
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert trainer.fit()["skipped_steps"] == STEPS
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=0)
