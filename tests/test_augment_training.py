"""Consistent augmentation in training (pipeline/trainer.py with the `augment` and `ema` sections), on both
loaders: the teacher and the student receive identical pixels at every step, and they are the loader's
batch (crops, flips, RandAugment) mixed by the definition (a float64 loop) with parameters that are the
key's (mix_draws) for pair-mates of the epoch's permutation; a resumed run replays the same mixing and
ends with exactly the uninterrupted run's student and EMA weights; a skipped step leaves the EMA as it was.

Spies: the teacher function and a forward pre-hook on the student record what each receives; a wrapper
around `train_step` records the batch the loader handed over (before mixing)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import checkpoint
from pipeline.config import parse_args
from pipeline.data.mix_draws import MixSpec, mix_draws
from pipeline.data.sharding import pair_permutation
from pipeline.trainer import Trainer
from tests.conftest import REPO, tiny_run_args
from tests.test_mixing import brute_force_mix

pytestmark = pytest.mark.timeout(600)
MIX = {"augment.mixup_alpha": 0.8, "augment.cutmix_alpha": 1.0, "augment.switch_prob": 0.5, "augment.mix_prob": 0.9,
       "augment.randaug_ops": 2, "augment.randaug_magnitude": 12, "ema.decay": 0.8, "train.label_smoothing": 0.1}


def make(out, teacher, backend, resume="", **overrides):
    args = tiny_run_args(out, teacher, **{
        "data.backend": backend, "data.workers": 1 if backend == "dali" else 0, "data.image_size": 24,
        "data.val_resize": 24, "data.val_per_class": 1, "data.aug_seed": 5, "train.batch_size": 8,
        "data.demo_dir": str(REPO / ".data" / "fashion_mnist_jpeg"), **MIX, **overrides})
    cfg, _ = parse_args(args)
    return Trainer(cfg, resume=resume)


class Spy:
    """What the loader handed over and what the teacher and the student received, per training step."""

    def __init__(self, trainer: Trainer, poison_step: int | None = None):
        self.batches, self.teacher_in, self.student_in, self.ema_moved = [], [], [], []
        self.training = False
        teacher_fn, train_step = trainer.teacher_fn, trainer.train_step

        def teacher(images):
            if self.training:
                self.teacher_in.append(images.clone())
            return teacher_fn(images)

        def step(batch):
            if trainer.global_step == poison_step:  # a NaN pixel: a non-finite loss, the step is skipped
                batch = {**batch, "images": batch["images"].clone()}
                batch["images"][0, 0, 0, 0] = float("nan")
            self.batches.append({k: v.clone() for k, v in batch.items()})
            before = [v.clone() for v in trainer.ema.module.state_dict().values()]
            self.training = True
            try:
                return train_step(batch)
            finally:
                self.training = False
                after = trainer.ema.module.state_dict().values()
                self.ema_moved.append(any(not torch.equal(a, b) for a, b in zip(before, after)))

        trainer.teacher_fn, trainer.train_step = teacher, step
        trainer.distiller.student.register_forward_pre_hook(
            lambda module, args: self.student_in.append(args[0].clone()) if self.training else None)


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_teacher_and_student_see_the_same_mixed_pixels(tmp_path, tiny_teacher, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    trainer = make(tmp_path, tiny_teacher, backend, **{"train.epochs": 1, "train.steps_per_epoch": 3,
                                                        "train.skip_nonfinite": "true"})
    spy = Spy(trainer, poison_step=2)
    trainer.fit()
    assert len(spy.batches) == len(spy.teacher_in) == len(spy.student_in) == 3
    mates = dict(pair_permutation(trainer.train_loader.num_samples, aug_seed=5, epoch=0).tolist())
    mates |= {b: a for a, b in mates.items()}
    kinds = set()
    for step, (batch, t_in, s_in) in enumerate(zip(spy.batches, spy.teacher_in, spy.student_in)):
        torch.testing.assert_close(t_in, s_in, rtol=0, atol=0, equal_nan=True)  # the same pixels, bit for bit
        index = batch["index"].numpy()
        assert [mates[i] for i in index[0::2]] == index[1::2].tolist()  # mates side by side
        lam, box = mix_draws(5, 0, index, MixSpec(0.8, 1.0, 0.9, 0.5), height=24, width=24)  # the key's
        assert np.array_equal(batch["mix_lam"].numpy(), lam) and np.array_equal(batch["mix_box"].numpy(), box)
        expected = brute_force_mix(batch["images"].numpy(), lam, box)
        rows = slice(2, None) if torch.isnan(batch["images"]).any() else slice(None)  # lerp's 0 * NaN reaches
        assert np.allclose(t_in.double().numpy()[rows], expected[rows], atol=1e-5)  # the poisoned row's mate
        boxed = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        kinds |= {"cutmix"} if boxed.any() else set()
        kinds |= {"mixup"} if (~boxed & (lam < 1)).any() else set()
        kinds |= {"unmixed"} if (lam == 1).any() else set()
    assert kinds == {"cutmix", "mixup", "unmixed"}
    assert spy.ema_moved == [True, True, False]  # the skipped step (NaN pixel) left the EMA as it was
    assert trainer.skipped_steps == 1


def test_resumed_run_replays_the_mixing_and_ends_with_the_same_student_and_ema(tmp_path, tiny_teacher):
    overrides = {"train.epochs": 2, "train.steps_per_epoch": 3, "train.checkpoint_every": 2, "train.keep_checkpoints": 5,
                 "train.eval_every": 2}
    full = make(tmp_path / "full", tiny_teacher, "torch", **overrides)
    full_spy = Spy(full)
    full.fit()
    path = checkpoint.checkpoint_dir(full.run_dir, 2)
    assert (checkpoint.read_trainer_state(path)["step_in_epoch"]) == 2  # mid-epoch 1 of 3 steps
    resumed = make(tmp_path / "resumed", tiny_teacher, "torch", resume=str(path), **overrides)
    resumed_spy = Spy(resumed)
    resumed.fit()
    assert len(resumed_spy.batches) == 4 and len(full_spy.batches) == 6
    for a, b in zip(resumed_spy.batches, full_spy.batches[2:]):
        for key in ("index", "mix_lam", "mix_box", "images"):
            assert torch.equal(a[key], b[key]), key
    for ours, theirs in ((resumed.distiller.student, full.distiller.student), (resumed.ema.module, full.ema.module)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) == 0.0
    ema, student = full.ema.module.state_dict(), full.distiller.student.state_dict()
    assert any(not torch.equal(ema[k], student[k]) for k in ema)  # an average, not a copy
    assert "ema_top1" in full.history[-1] and full.history[-1]["ema_top1"] == resumed.history[-1]["ema_top1"]
