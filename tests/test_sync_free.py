"""The steady-state step never waits on the host (issue 9; ../shared/design.md "The hot path").

In-process: over steady-state steps no Tensor.item / bool / float / int / tolist is called from the
trainer, the methods or the kernels, and no tensor is made from host data (on CUDA, a copy that waits). Two processes (gloo): no Python-level collective runs between
logging steps (DDP's gradient all-reduce runs in its C++ reducer), and a NaN loss on one rank only is
skipped on both, leaving weights and momentum untouched and identical on both ranks.
"""
from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.config import parse_args
from pipeline.trainer import Trainer
from tests.conftest import REPO, accelerate_launch, made_once, tiny_run_args

HOST_READS = ("item", "__bool__", "__float__", "__int__", "tolist")
WATCHED = ("pipeline/trainer.py", "pipeline/nonfinite.py", "pipeline/stopping.py", "pipeline/methods/", "kernels/")



@contextmanager
def host_reads(trainer: Trainer):
    """Record (global step, read, file:line) for every tensor-to-host read made from a WATCHED file."""
    calls = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}

    def wrap(name, fn):
        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            path = os.path.relpath(frame.f_code.co_filename, REPO)
            if path.startswith(WATCHED):
                calls.append((trainer.global_step, name, f"{path}:{frame.f_lineno}"))
            return fn(self, *args, **kwargs)
        return wrapper

    for name in HOST_READS:
        setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            if fn is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("method", ["kd", "icd+kd", "dccd"])
def test_steady_state_steps_never_read_a_tensor_on_the_host(tmp_path, tiny_teacher, demo_root, method):
    steps = 5
    cfg, _ = parse_args(tiny_run_args(tmp_path, tiny_teacher, **{
        "method": method, "train.batch_size": 8, "train.steps_per_epoch": steps, "train.log_every": 1000}))
    trainer = Trainer(cfg)
    with host_reads(trainer) as calls:
        trainer.train_epoch()
    assert trainer.global_step == steps
    assert calls, "the patch saw nothing: the epoch's last step must read the losses"
    between = [c for c in calls if c[0] != steps]  # only the epoch's last step (a logging step) may read
    assert not between, f"host reads between logging steps: {between}"


class TensorsFromHostData(TorchDispatchMode):
    """Records `torch.tensor(...)`-style tensors made from host data (aten.lift_fresh): on CUDA each is a
    host-to-device copy from pageable memory, which waits for the device."""

    def __init__(self):
        super().__init__()
        self.made = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default):
            frames = traceback.extract_stack()  # the loader's own tensors (its collate) are not the step's
            self.made += not any("utils/data" in f.filename or "pipeline/data" in f.filename for f in frames)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["kd", "icd+kd", "dccd", "crd+kd"])  # slkd adds networks, no per-step tensors
def test_steps_make_no_tensor_from_host_data(tmp_path, tiny_teacher, demo_root, method):
    """Every step after the first (which may make its storage once): the skipped-step flag, the buffers'
    restore and every method's terms are made on the device, with no copy from the host."""
    cfg, _ = parse_args(tiny_run_args(tmp_path, tiny_teacher, **{
        "method": method, "train.batch_size": 8, "train.steps_per_epoch": 3, "train.log_every": 1000,
        "crd.nce_k": 64}))
    trainer = Trainer(cfg)
    trainer.train_loader.set_epoch(0)
    first, *steady = list(trainer.train_loader)
    trainer.train_step(first)
    with TensorsFromHostData() as record:
        for batch in steady:
            trainer.train_step(batch)
    assert record.made == 0, f"{record.made} tensors made from host data in 2 steps"


def test_host_read_detector_catches_the_old_per_step_check(tmp_path, tiny_teacher, demo_root, monkeypatch):
    """The detector itself: today's per-step `bool(isfinite(...))`, compiled as if it were a line of
    pipeline/trainer.py, is caught on every step."""
    cfg, _ = parse_args(tiny_run_args(tmp_path, tiny_teacher, **{
        "method": "kd", "train.batch_size": 8, "train.steps_per_epoch": 3, "train.log_every": 1000}))
    trainer = Trainer(cfg)
    scope = {}
    exec(compile("def check(terms): return bool(torch.isfinite(sum(terms.values())))",
                 str(REPO / "pipeline" / "trainer.py"), "exec"), {"torch": torch}, scope)
    check = trainer.nonfinite.check
    monkeypatch.setattr(trainer.nonfinite, "check", lambda terms, step: (scope["check"](terms), check(terms, step))[1])
    with host_reads(trainer) as calls:
        trainer.train_epoch()
    assert {c[0] for c in calls if c[1] == "__bool__"} == {0, 1, 2}


@pytest.fixture(scope="session")
def two_process_nan_run(tmp_path_factory, tiny_teacher, demo_root):
    def make(out):
        args = tiny_run_args(out / "runs", tiny_teacher, **{
            "method": "kd+test_nan_rank1", "train.batch_size": 8, "train.steps_per_epoch": 7, "train.epochs": 1,
            "train.log_every": 3, "train.skip_nonfinite": True})
        accelerate_launch(["tests/helpers/sync_probe.py", str(out / "probe")] + args)
    out = made_once(tmp_path_factory, "sync_free", make)  # one launch per session, whichever worker asks first
    return [torch.load(out / "probe" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_no_collective_between_logging_steps_in_two_processes(two_process_nan_run):
    for rank in two_process_nan_run:
        assert rank["world"] == 2
        calls = rank["calls"]
        assert not [c for c in calls if c[0] == "step"], f"collectives inside train_step: {calls}"
        in_epoch = {step for phase, step, _ in calls if phase == "epoch"}
        assert in_epoch == {3, 6, 7}, f"collectives at steps {sorted(in_epoch)}; logging steps are 3, 6, 7"
        assert [c for c in calls if c[0] == "outside"], "the patch saw no collective at all (evaluation has some)"


def test_nan_on_one_rank_is_skipped_on_both_with_identical_weights(two_process_nan_run):
    for rank in two_process_nan_run:
        assert rank["summary"]["skipped_steps"] == 1
        before, after = rank["around_nan"]["before"], rank["around_nan"]["after"]
        for key in ("params", "momentum"):
            assert all(torch.equal(a, b) for a, b in zip(before[key], after[key])), f"{key} changed on a skip"
            assert all(torch.isfinite(p).all() for p in rank["final"][key])
    rank0, rank1 = two_process_nan_run
    for key in ("params", "momentum"):
        assert all(torch.equal(a, b) for a, b in zip(rank0["final"][key], rank1["final"][key]))
    # the good steps did train: the weights moved between step 3 and the end
    assert any(not torch.equal(a, b) for a, b in zip(rank0["around_nan"]["after"]["params"], rank0["final"]["params"]))
