"""The trainer's parts split out of it, each alone and in-process: the batch plan's warning and its fix
(pipeline/batch.py), the optimizer's momentum buffers and the lr the schedule sets after k updates against
timm's closed forms (pipeline/optim.py), stop signals and their agreement across processes
(pipeline/stopping.py), and what resume tries, says and restores (pipeline/run_checkpoints.py)."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pipeline import checkpoint as ck
from pipeline.batch import describe, plan_batch, small_batch_warning
from pipeline.config import Config, apply
from pipeline.optim import create_optimizer, create_scheduler
from pipeline.run_checkpoints import ResumeMismatchError, RunCheckpoints
from pipeline.stopping import StopSignals


def train_config(**keys):
    cfg = Config()
    apply(cfg, {"train": keys}, "test")
    return cfg.train


# ---- pipeline/batch.py ----------------------------------------------------------------------------------
@pytest.mark.parametrize("per_process, warns", [(31, True), (32, False), (33, False)])
def test_small_batch_warning_starts_below_32_per_process(per_process, warns):
    """The documented threshold, as a number: 31 images per process warn on CUDA, 32 do not."""
    plan = plan_batch(train_config(batch_size=per_process), 4)
    assert (small_batch_warning(plan, "cuda") is not None) is warns
    assert small_batch_warning(plan, "cpu") is None


@pytest.mark.parametrize("global_batch, processes, most_gpus", [
    (16, 2, 1),  # 16 // 32 = 0: still "at most 1 GPU", never 0
    (64, 4, 2),  # 64 // 32
    (256, 16, 8),
    (96, 4, 3),
])
def test_small_global_batch_fix_names_how_many_gpus_keep_32_each(global_batch, processes, most_gpus):
    plan = plan_batch(train_config(global_batch_size=global_batch), processes)
    message = small_batch_warning(plan, "cuda")
    assert f"{global_batch // processes} images per process" in message
    assert f"run on at most {most_gpus} GPUs," in message
    assert f"global batch becomes batch_size x {processes}" in message


@pytest.mark.parametrize("processes, words", [(1, "x 1 process = 40 global"), (2, "x 2 processes = 80 global")])
def test_startup_line_says_process_for_one_and_processes_for_more(processes, words):
    t = train_config(batch_size=40, lr=0.2)
    assert f"batch: 40 per process {words} " in describe(plan_batch(t, processes), t)


# ---- pipeline/optim.py ----------------------------------------------------------------------------------
class Tiny(nn.Module):
    """What create_optimizer reads of a Distiller: parameters, and `methods` with no_weight_decay()."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)
        self.methods = nn.ModuleList()


def test_momentum_buffers_start_at_zero_so_a_skipped_first_step_changes_nothing():
    torch.manual_seed(0)
    model = Tiny()
    lr, wd = 0.5, 0.1
    optimizer = create_optimizer(model, train_config(weight_decay=wd, momentum=0.9), lr)
    params = list(model.parameters())
    for p in params:  # every parameter has its buffer before the first step, all zeros
        buf = optimizer.state[p]["momentum_buffer"]
        assert buf.shape == p.shape and not buf.any()
    start = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.found_inf = torch.tensor(1.0)  # the first step is skipped (a non-finite gradient)
    optimizer.step()
    assert all(torch.equal(p, s) for p, s in zip(params, start))
    assert all(not optimizer.state[p]["momentum_buffer"].any() for p in params)
    optimizer.found_inf = torch.tensor(0.0)
    optimizer.step()  # then the update of a fresh first step: buffer = g (+ wd p), p <- p - lr * buffer
    decayed = {id(model.fc.weight)}  # biases and norm parameters (1-d) take no weight decay
    for p, s, g in zip(params, start, grads):
        expected = s - lr * (g + (wd * s if id(p) in decayed else 0))
        assert torch.allclose(p, expected, atol=1e-6), p.shape


def warmup_then(kind, t, base, warmup_lr, warmup_t, total_t, min_lr, milestones, rate):
    """timm's schedules in closed form, t updates in (warm-up from warmup_lr, linear, over warmup_t updates;
    then cosine over total_t updates counted from 0, or x rate at each milestone: timm decays when
    t + 1 reaches it)."""
    if t < warmup_t:
        return warmup_lr + t * (base - warmup_lr) / warmup_t
    if kind == "cosine":
        return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / total_t))
    return base * rate ** sum(t + 1 >= m for m in milestones)


@pytest.mark.parametrize("sched", ["cosine", "step"])
def test_the_lr_after_k_updates_follows_the_closed_form(sched):
    steps_per_epoch, base = 5, 0.4
    train = train_config(sched=sched, epochs=6, warmup_epochs=1.4, warmup_lr=0.01, min_lr=0.02,
                         decay_epochs=[2, 4], decay_rate=0.3)
    model = Tiny()
    optimizer = create_optimizer(model, train, base)
    scheduler = create_scheduler(optimizer, train, steps_per_epoch)
    seen = [optimizer.param_groups[0]["lr"]]  # set at creation: the lr of the first update
    for k in range(1, 6 * steps_per_epoch):
        scheduler.step_update(k)  # as the trainer does after its k-th update
        seen.append(optimizer.param_groups[0]["lr"])
        assert len({g["lr"] for g in optimizer.param_groups}) == 1
    expected = [warmup_then(sched, t, base, 0.01, 1.4 * steps_per_epoch, 6 * steps_per_epoch, 0.02, (10, 20), 0.3)
                for t in range(6 * steps_per_epoch)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(0.01, rel=1e-12)  # the warm-up starts AT warmup_lr


# ---- pipeline/stopping.py -------------------------------------------------------------------------------
class Processes:
    """accelerate's side of any_process: `others` is what the other processes report; counts collectives."""

    def __init__(self, num_processes, others=False):
        self.num_processes, self.others, self.device, self.collectives = num_processes, others, "cpu", 0

    def reduce(self, t, op):
        assert op == "max"
        self.collectives += 1
        return torch.maximum(t, torch.tensor(float(self.others)))


def test_sigusr1_and_sigterm_are_recorded_and_name_the_cause():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    for sig, name in ((signal.SIGUSR1, "SIGUSR1"), (signal.SIGTERM, "SIGTERM")):
        stop = StopSignals()
        stop.install()
        assert stop.signal is None
        os.kill(os.getpid(), sig)  # handled in this (main) thread before the next bytecode
        assert stop.signal == sig and stop.cause() == name
        assert stop.requested(Processes(1)) and stop.cause() == name  # its own signal: named


def test_install_outside_the_main_thread_warns_instead_of_failing(caplog):
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    errors = []

    def build():
        try:
            StopSignals().install()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    with caplog.at_level(logging.WARNING, logger="pipeline.stopping"):
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
    assert errors == []
    assert "outside the main thread" in caplog.text
    assert {s: signal.getsignal(s) for s in before} == before


def test_between_logging_steps_one_process_stops_at_once_several_run_no_collective():
    stop = StopSignals()
    stop.signal = signal.SIGUSR1
    alone = Processes(1)
    assert stop.requested(alone, collective=False) is True  # one process: no one to agree with
    two = Processes(2, others=True)
    assert stop.requested(two, collective=False) is False and two.collectives == 0  # waits for the next check
    assert stop.requested(two) is True and two.collectives == 1  # the default is the collective check
    quiet = StopSignals()
    assert quiet.requested(alone, collective=False) is False and quiet.requested(Processes(1)) is False


def test_a_signal_to_another_process_stops_this_one_and_says_so():
    stop = StopSignals()
    procs = Processes(2, others=True)
    assert stop.requested(procs) is True
    assert stop.signal == 0 and stop.cause() == "a signal to another process"
    nobody = StopSignals()
    assert nobody.requested(Processes(2, others=False)) is False and nobody.signal is None
    mine = StopSignals()
    mine.signal = signal.SIGTERM
    assert mine.requested(Processes(2, others=False)) is True and mine.cause() == "SIGTERM"


# ---- pipeline/run_checkpoints.py ------------------------------------------------------------------------
class Writer:
    """A one-process accelerate stand-in whose save_state writes a loadable RNG state and a model file;
    load_state records what it was asked to load."""
    num_processes, is_main_process = 1, True

    def __init__(self, process_index=0):
        self.process_index, self.loaded = process_index, []

    def save_state(self, folder):
        os.makedirs(folder, exist_ok=True)
        torch.save({"rng": self.process_index}, os.path.join(folder, f"{ck.RNG_FILE}_{self.process_index}.pkl"))
        Path(folder, "model.safetensors").write_bytes(b"m" * 11)

    def load_state(self, folder):
        self.loaded.append(folder)

    def wait_for_everyone(self):
        pass


def save(run_dir, step, epoch, in_epoch, method="kd", loader_state=None, process_index=0):
    state = {"epoch": epoch, "step_in_epoch": in_epoch, "global_step": step, "skipped_steps": 1,
             "history": [], "method": method, "world_size": 1}
    return ck.save_checkpoint(Writer(process_index), run_dir, state, 0, loader_state)


def checkpoints(run_dir, failing=()):
    """RunCheckpoints whose load fails (ValueError) for the named folders; `tried` lists the folders tried."""
    tried = []
    rc = RunCheckpoints(SimpleNamespace(num_processes=1), run_dir, "kd", keep=0, optimizer=None,
                        train_loader=None, before_save=None)

    def load(path):
        tried.append(path.name)
        if path.name in failing:
            raise ValueError("damaged")
        return ck.read_trainer_state(path)
    rc.load = load
    return rc, tried


def test_auto_falls_back_past_every_failing_checkpoint_to_the_oldest_loadable_one(tmp_path, caplog):
    for step, epoch, in_epoch in ((4, 0, 4), (7, 1, 2), (9, 1, 4)):
        save(tmp_path, step, epoch, in_epoch)
    rc, tried = checkpoints(tmp_path, failing={"step-000000009", "step-000000007"})
    with caplog.at_level(logging.INFO, logger="pipeline.run_checkpoints"):
        progress = rc.resume("auto")
    assert tried == ["step-000000009", "step-000000007", "step-000000004"]
    assert (progress["global_step"], progress["epoch"], progress["step_in_epoch"]) == (4, 0, 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"cannot load checkpoint {ck.checkpoint_dir(tmp_path, s)} (ValueError: damaged); falling "
                        "back to the one before it" for s in (9, 7)]
    # the progress line counts epochs from 1, as every other line of the log does
    assert f"resumed from {ck.checkpoint_dir(tmp_path, 4)} at epoch 1, step 4 of the epoch" in caplog.text


def test_resume_messages_name_the_cause_and_the_epoch_from_one(tmp_path, caplog):
    save(tmp_path, 12, 2, 3)
    path = ck.checkpoint_dir(tmp_path, 12)
    rc, _ = checkpoints(tmp_path, failing={"step-000000012"})
    with pytest.raises(RuntimeError) as e:
        rc.resume(str(path))  # an explicit path: no fallback, and no talk of one
    assert str(e.value) == f"cannot load checkpoint {path} (ValueError: damaged)"
    rc, _ = checkpoints(tmp_path, failing={"step-000000012"})
    with pytest.raises(RuntimeError) as e:
        rc.resume("auto")
    assert str(e.value) == (f"cannot load checkpoint {path} (ValueError: damaged); no older complete checkpoint "
                            "to fall back to")
    rc, _ = checkpoints(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.run_checkpoints"):
        assert rc.resume(str(path))["epoch"] == 2
    assert f"resumed from {path} at epoch 3, step 3 of the epoch" in caplog.text


class Loader:
    def __init__(self):
        self.restored = []

    def load_state_dict(self, state, where):
        self.restored.append((state, where))


def test_load_restores_accelerate_the_loader_of_this_rank_and_the_fused_flag(tmp_path):
    path = save(tmp_path, 6, 0, 6, loader_state={"position": "rank 0"})
    (path / f"{ck.LOADER_FILE}_1.json").write_text(json.dumps({"position": "rank 1"}))
    (path / f"{ck.RNG_FILE}_1.pkl").write_bytes((path / f"{ck.RNG_FILE}_0.pkl").read_bytes())
    acc, loader = Writer(process_index=1), Loader()
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))], lr=0.1)
    optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})
    for group in optimizer.param_groups:
        group["fused"] = False  # a checkpoint written before the fused optimizer
    rc = RunCheckpoints(acc, tmp_path, "kd", keep=0, optimizer=optimizer, train_loader=loader, before_save=None)
    state = rc.load(path)
    assert state["global_step"] == 6 and acc.loaded == [str(path)]
    assert loader.restored == [({"position": "rank 1"}, str(path))]  # this process's position, and where from
    assert [g["fused"] for g in optimizer.param_groups] == [True, True]
    # a loader without a state (torchvision) is left alone; another method's checkpoint is refused
    RunCheckpoints(Writer(), tmp_path, "kd", 0, optimizer, SimpleNamespace(), None).load(path)
    with pytest.raises(ResumeMismatchError, match="written by --method kd, not icd"):
        RunCheckpoints(Writer(), tmp_path, "icd", 0, optimizer, loader, None).load(path)
    assert len(loader.restored) == 1
