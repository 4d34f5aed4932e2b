"""The trainer's arithmetic against hand-worked answers, in-process and cheap (no data, no timm models):
exact top-1/top-5 counting over padded validation shards, the lr per 256 images and the weight-decay
groups, and what resume/save restore. Trainer methods run on stand-in `self` objects, so each test
exercises exactly one method.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pipeline import checkpoint
from pipeline.config import Config, apply
from pipeline.data.sharding import val_indices
from pipeline.distiller import Distiller
from pipeline.methods import MethodContext
from pipeline.methods.ccd import CCD
from pipeline.methods.icd import ICD
from pipeline.batch import plan_batch
from pipeline.optim import create_optimizer, create_scheduler
from pipeline.run_checkpoints import RunCheckpoints
from pipeline.trainer import Trainer

CLASSES = 10
# Validation set of 13 samples. LABELS[i] is sample i's class; RANKS[i] is where the stub student puts
# that class in its ranking of the 10 classes (0 = top-1, 1-4 = top-5 only, 5-9 = a miss).
LABELS = [(3 * i + 1) % CLASSES for i in range(13)]
RANKS = [0, 0, 1, 4, 5, 9, 0, 2, 7, 0, 3, 6, 0]
# By hand: rank 0 at samples 0, 1, 6, 9, 12 -> 5 top-1 hits; rank < 5 also at 2, 3, 7, 10 -> 9 top-5 hits.
STUDENT_TOP1, STUDENT_TOP5 = 100 * 5 / 13, 100 * 9 / 13
# The stub teacher: right everywhere except sample 12 (rank 9): 12 of 13 in top-1 and top-5.
TEACHER_RANKS = [0] * 12 + [9]
TEACHER_TOP1 = TEACHER_TOP5 = 100 * 12 / 13
# Sample 0 is a top-1 hit for both: padding reads sample 0, so counting a padded row changes the result.


class RankingStub(nn.Module):
    """Logits that rank sample i's label at ranks[i]; the sample index is written in the image's first pixel."""

    def __init__(self, ranks):
        super().__init__()
        self.ranks = ranks

    def forward(self, images):
        rows = []
        for i in images[:, 0, 0, 0].round().long().tolist():
            order = [c for c in range(CLASSES) if c != LABELS[i]]
            order.insert(self.ranks[i], LABELS[i])
            logits = torch.empty(CLASSES)
            logits[order] = torch.arange(CLASSES, 0, -1, dtype=torch.float32)  # order[0] scores highest
            rows.append(logits)
        return torch.stack(rows), torch.zeros(len(rows), 4)


class ValLoader:
    """The validation shard of one rank, padded as the real loaders pad it (pipeline/data/sharding.py)."""

    def __init__(self, batch_size, rank, world):
        self.index, self.valid = val_indices(len(LABELS), batch_size, rank, world)

    def set_epoch(self, epoch, start_step=0):
        pass

    def __iter__(self):
        for index, valid in zip(self.index, self.valid):
            images = torch.tensor(index, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
            labels = torch.tensor([LABELS[i] for i in index])
            yield {"images": images, "views": [images], "labels": labels, "index": torch.from_numpy(index),
                   "valid": torch.from_numpy(valid)}


class Accelerator:
    """Single-process stand-in. reduce() returns the sum of what every simulated rank passed to the same
    call (`peers`: each rank's list of reduce inputs, recorded in a first pass), or the input itself."""

    def __init__(self, peers=None):
        self.device, self.num_processes, self.process_index = torch.device("cpu"), 1, 0
        self.peers, self.calls = peers, []

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        self.calls.append(tensor.clone())
        if self.peers is None:
            return tensor
        return sum(p[len(self.calls) - 1] for p in self.peers)

    def unwrap_model(self, model):
        return model

    def autocast(self):
        return contextlib.nullcontext()


class Holder(nn.Module):
    def __init__(self, student):
        super().__init__()
        self.student, self.methods = student, nn.ModuleList()


def fake_trainer(accelerator, loader, teacher=True):
    return SimpleNamespace(cfg=Config(), accelerator=accelerator, model=Holder(RankingStub(RANKS)), history=[],
                           teacher=RankingStub(TEACHER_RANKS) if teacher else None, val_loader=loader, real_labels=None,
                           sync_batchnorm_statistics=lambda: None, ema=None, cache=None)


@pytest.mark.parametrize("world, batch_size", [(1, 4), (1, 13), (2, 4), (3, 2), (4, 3)])
def test_evaluate_counts_top1_top5_exactly_over_padded_shards(world, batch_size):
    # First pass: each simulated rank evaluates its own shard and we record what it reduces.
    peers = []
    for rank in range(world):
        acc = Accelerator()
        Trainer.evaluate(fake_trainer(acc, ValLoader(batch_size, rank, world)))
        peers.append(acc.calls)
    padded = sum(int((~ValLoader(batch_size, r, world).valid).sum()) for r in range(world))
    if world > 1:
        assert padded > 0  # precondition: these shards carry padding that must not be counted
    # Second pass: rank 0 again, its reductions now summing every rank's counts, as all_reduce would.
    metrics = Trainer.evaluate(fake_trainer(Accelerator(peers), ValLoader(batch_size, 0, world)))
    assert metrics["val_images"] == 13
    assert metrics["student_top1"] == pytest.approx(STUDENT_TOP1, abs=1e-9)
    assert metrics["student_top5"] == pytest.approx(STUDENT_TOP5, abs=1e-9)
    assert metrics["teacher_top1"] == pytest.approx(TEACHER_TOP1, abs=1e-9)
    assert metrics["teacher_top5"] == pytest.approx(TEACHER_TOP5, abs=1e-9)


def test_evaluate_runs_the_frozen_teacher_once_and_carries_its_result():
    trainer = fake_trainer(Accelerator(), ValLoader(13, 0, 1))
    calls = []
    trainer.teacher.register_forward_hook(lambda *args: calls.append(1))
    first = Trainer.evaluate(trainer)
    second = Trainer.evaluate(trainer)
    assert len(calls) == 1  # evaluated in the first evaluation only
    assert first["teacher_top1"] == second["teacher_top1"] == pytest.approx(TEACHER_TOP1, abs=1e-9)
    assert second["student_top1"] == pytest.approx(STUDENT_TOP1, abs=1e-9)
    assert trainer.history == [first, second]


# ---- optimizer: lr per 256 images, weight decay by explicit parameter names -------------------------------
class TinyStudent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, CLASSES)


def icd_ccd_distiller(cfg):
    ctx = MethodContext(cfg=cfg, student_dim=4, teacher_dim=6, num_classes=CLASSES, num_train_samples=40,
                        build_teacher_like=None)
    return Distiller(TinyStudent(), [ICD(ctx), CCD(ctx)], cfg.train.ce_weight)


# Written out, not derived: weights of convolutions and linear layers decay; biases, norm layers and ICD's
# scalars tau (log_scale) and b (bias) do not.
DECAYED = {"student.conv.weight", "student.fc.weight", "methods.0.head_s.weight", "methods.0.head_t.weight",
           "methods.1.transform.0.weight", "methods.1.transform.3.weight"}
NOT_DECAYED = {"student.bn.weight", "student.bn.bias", "student.fc.bias", "methods.0.head_s.bias",
               "methods.0.head_t.bias", "methods.0.log_scale", "methods.0.bias", "methods.1.transform.0.bias",
               "methods.1.transform.1.weight", "methods.1.transform.1.bias", "methods.1.transform.3.bias"}


@pytest.mark.parametrize("lr, batch, world, expected_lr", [
    (0.1, {"batch_size": 256}, 1, 0.1),
    (0.1, {"batch_size": 256}, 2, 0.2),  # 256 per process: a global batch of 512, whatever the process count
    (0.1, {"global_batch_size": 512, "batch_size": 7}, 2, 0.2),  # the same global batch, batch_size not used
    (0.2, {"global_batch_size": 96}, 4, 0.075),
    (0.05, {"batch_size": 128}, 8, 0.2),
    (0.1, {"batch_size": 64}, 1, 0.025),
])
def test_optimizer_lr_per_256_images_and_weight_decay_groups(lr, batch, world, expected_lr):
    cfg = Config()
    apply(cfg, {"method": "icd+ccd", "train": {"lr": lr, **batch, "weight_decay": 3e-4, "momentum": 0.85}}, "test")
    model = icd_ccd_distiller(cfg)
    optimizer = create_optimizer(model, cfg.train, plan_batch(cfg.train, world).lr)
    names = {id(p): n for n, p in model.named_parameters()}
    assert set(names.values()) == DECAYED | NOT_DECAYED  # the lists above cover the model
    by_decay: dict[float, list[str]] = {}
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(expected_lr, rel=1e-12)
        assert group["momentum"] == 0.85
        by_decay.setdefault(group["weight_decay"], []).extend(names[id(p)] for p in group["params"])
    assert sorted(by_decay) == [0.0, 3e-4]
    assert sorted(by_decay[3e-4]) == sorted(DECAYED)
    assert sorted(by_decay[0.0]) == sorted(NOT_DECAYED)  # each parameter once: no duplicates either

    # The schedule starts at that lr (no warmup) and steps it x0.1 at each decay epoch.
    apply(cfg, {"train": {"epochs": 4, "decay_epochs": [2, 3], "decay_rate": 0.1, "warmup_epochs": 0}}, "test")
    scheduler = create_scheduler(optimizer, cfg.train, steps_per_epoch=5)
    assert all(g["lr"] == pytest.approx(expected_lr) for g in optimizer.param_groups)
    scheduler.step_update(2 * 5)
    assert all(g["lr"] == pytest.approx(expected_lr * 0.1) for g in optimizer.param_groups)
    scheduler.step_update(3 * 5)
    assert all(g["lr"] == pytest.approx(expected_lr * 0.01) for g in optimizer.param_groups)


# ---- resume and save: which state comes back ------------------------------------------------------------
def write_checkpoint(run_dir: Path, state: dict) -> Path:
    """A checkpoint folder with a valid manifest (what is_complete checks), written by hand."""
    path = checkpoint.checkpoint_dir(run_dir, state["global_step"])
    path.mkdir(parents=True)
    (path / checkpoint.STATE_FILE).write_text(json.dumps(state))
    (path / "model.safetensors").write_bytes(b"x" * 10)
    sizes = {checkpoint.STATE_FILE: (path / checkpoint.STATE_FILE).stat().st_size, "model.safetensors": 10}
    (path / checkpoint.COMPLETE).write_text(json.dumps(sizes))
    return path


def state_at(step, epoch, in_epoch):
    return {"epoch": epoch, "step_in_epoch": in_epoch, "global_step": step, "skipped_steps": step // 3,
            "history": [{"epoch": e, "student_top1": 10.0 * e} for e in range(1, epoch + 1)], "method": "kd",
            "world_size": 1}


def resume_fake(run_dir, failing=()):
    """RunCheckpoints with its loading replaced: which checkpoints it tries, and what comes back."""
    loaded = []
    checkpoints = RunCheckpoints(SimpleNamespace(num_processes=1), run_dir, "kd", keep=3, optimizer=None,
                                 train_loader=None, before_save=None)

    def load(path):
        loaded.append(path.name)
        if path.name in failing:
            raise ValueError("damaged")
        return checkpoint.read_trainer_state(path)
    checkpoints.load = load
    return checkpoints, loaded


def test_resume_restores_the_newest_loadable_checkpoint(tmp_path):
    for step, epoch, in_epoch in ((4, 0, 4), (7, 1, 2), (9, 1, 4)):
        write_checkpoint(tmp_path, state_at(step, epoch, in_epoch))
    checkpoints, loaded = resume_fake(tmp_path, failing={"step-000000009"})
    progress = checkpoints.resume("auto")
    assert loaded == ["step-000000009", "step-000000007"]  # newest first, then the one before it
    assert progress == {"epoch": 1, "step_in_epoch": 2, "global_step": 7, "skipped_steps": 2,
                        "history": [{"epoch": 1, "student_top1": 10.0}]}
    assert checkpoints.last_saved == (7, 1, 2)

    checkpoints, loaded = resume_fake(tmp_path)
    progress = checkpoints.resume(str(checkpoint.checkpoint_dir(tmp_path, 4)))  # an explicit path: exactly that one
    assert loaded == ["step-000000004"]
    assert (progress["epoch"], progress["step_in_epoch"], progress["global_step"]) == (0, 4, 4)

    trainer = SimpleNamespace(epoch=0, step_in_epoch=0, global_step=0, skipped_steps=0, history=[])
    Trainer.restore_progress(trainer, progress)  # the trainer continues from exactly that progress
    assert vars(trainer) == progress


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path):
    checkpoints, loaded = resume_fake(tmp_path)
    assert checkpoints.resume("auto") is None
    assert loaded == [] and checkpoints.last_saved is None
    trainer = SimpleNamespace(epoch=0, step_in_epoch=0, global_step=0, skipped_steps=0, history=[])
    Trainer.restore_progress(trainer, None)
    assert (trainer.epoch, trainer.global_step) == (0, 0)


def test_save_at_the_end_of_an_epoch_points_to_the_next_epoch(monkeypatch, tmp_path):
    saved, synced = [], []
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda acc, run_dir, state, keep, loader_state=None: saved.append(dict(state)))
    checkpoints = RunCheckpoints(SimpleNamespace(num_processes=2), tmp_path, "icd", keep=2, optimizer=None,
                                 train_loader=SimpleNamespace(), before_save=lambda: synced.append(1))
    fake = SimpleNamespace(epoch=3, step_in_epoch=5, global_step=40, skipped_steps=1, history=[{"epoch": 3}],
                           checkpoints=checkpoints)
    fake.progress = lambda epoch_done=False: Trainer.progress(fake, epoch_done)
    Trainer.save(fake)  # mid-epoch: this epoch, this step
    fake.global_step, fake.step_in_epoch = 41, 6
    Trainer.save(fake, epoch_done=True)  # the epoch is done: resume at the start of the next one
    Trainer.save(fake, epoch_done=True)  # the same state again: nothing written
    assert [(s["global_step"], s["epoch"], s["step_in_epoch"]) for s in saved] == [(40, 3, 5), (41, 4, 0)]
    assert saved[1]["method"] == "icd" and saved[1]["world_size"] == 2 and saved[1]["skipped_steps"] == 1
    assert checkpoints.last_saved == (41, 4, 0)
    assert len(synced) == 2  # BatchNorm statistics averaged before each write, not before a skipped one


def test_resume_auto_with_every_checkpoint_failing_is_an_error(tmp_path):
    for step in (4, 7):
        write_checkpoint(tmp_path, state_at(step, 0, step))
    checkpoints, loaded = resume_fake(tmp_path, failing={"step-000000004", "step-000000007"})
    with pytest.raises(RuntimeError, match="no older complete checkpoint"):
        checkpoints.resume("auto")
    assert loaded == ["step-000000007", "step-000000004"] and checkpoints.last_saved is None


# ---- one real training step: the SGD update, written out -------------------------------------------------
def test_a_training_step_applies_one_sgd_update_with_the_scaled_lr(tmp_path, tiny_teacher, demo_root):
    """p <- p - lr * (grad + wd * p) on the first momentum-SGD step (the buffer starts as the gradient), with
    lr = 0.4 * 8 / 256 = 0.0125; the gradients are recorded as the optimizer steps, so they must be there
    then (after backward, before zero_grad) and gone after the step."""
    from pipeline.config import parse_args
    from tests.conftest import tiny_run_args

    cfg, _ = parse_args(tiny_run_args(tmp_path, tiny_teacher, **{
        "method": "none", "train.lr": 0.4, "train.batch_size": 8, "train.weight_decay": 1e-3, "data.per_class": 2,
        "data.val_per_class": 1}))
    trainer = Trainer(cfg)
    params = dict(trainer.model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    seen = []

    def record(optimizer, args, kwargs):
        seen.append({"grads": {n: None if p.grad is None else p.grad.clone() for n, p in params.items()},
                     "groups": [(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups]})

    getattr(trainer.optimizer, "optimizer", trainer.optimizer).register_step_pre_hook(record)  # accelerate's wrapper
    trainer.train_step(next(iter(trainer.train_loader)))
    assert len(seen) == 1, "the optimizer did not step exactly once"
    grads, groups = seen[0]["grads"], seen[0]["groups"]
    assert all(lr == pytest.approx(0.0125) for lr, _, _ in groups)
    decay = {i for _, wd, ids in groups if wd > 0 for i in ids}
    assert sum(g.abs().sum() for g in grads.values() if g is not None) > 0
    moved = 0
    for n, p in params.items():
        g = grads[n]
        if g is None:
            continue
        wd = 1e-3 if id(p) in decay else 0.0
        expected = before[n] - 0.0125 * (g + wd * before[n])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
        moved += int(not torch.equal(p.detach(), before[n]))
    assert moved > 0
    assert all(p.grad is None for p in params.values())  # zeroed after the step
