"""pipeline/data/planned.PlannedLoader's bookkeeping, without images: aug_seed -1 meaning train.seed, where a
fresh loader says it is, a length that is never negative, `set_augment` (inactive specs off, odd batches
refused only when mixing) and the every-pair validity mask against the plan's on batches where the odd
sample's copy sits in the second half."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.data import planned
from pipeline.data.mix_draws import MixSpec
from pipeline.data.planned import PlannedLoader
from pipeline.data.sharding import every_pair_indices
from pipeline.errors import BadInputError


class Listing:
    """What PlannedLoader reads of a listing before any image: its class count and length."""
    num_classes = 3

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n


def loader(monkeypatch, n=12, batch_size=4, aug_seed=-1, seed=3, rank=0, world=1) -> PlannedLoader:
    monkeypatch.setattr(planned, "sample_table", lambda source: SimpleNamespace(unreadable=lambda: np.zeros(0)))
    return PlannedLoader(Listing(n), train=True, views=1, batch_size=batch_size, image_size=8, min_area=0.5,
                         seed=seed, aug_seed=aug_seed, rank=rank, world=world, device=torch.device("cpu"))


@pytest.mark.parametrize("aug_seed, expected", [(None, 3), (-1, 3), (0, 0), (5, 5)])
def test_aug_seed_minus_one_means_the_train_seed(monkeypatch, aug_seed, expected):
    assert loader(monkeypatch, aug_seed=aug_seed, seed=3).aug_seed == expected


def test_a_fresh_loader_is_at_epoch_0_step_0_and_its_length_is_never_negative(monkeypatch):
    lo = loader(monkeypatch, n=12, batch_size=4)
    state = lo.state_dict()
    assert (state["epoch"], state["step"], state["plan"]) == (0, 0, "train")
    assert len(lo) == 3  # 12 // 4
    lo.set_epoch(0, start_step=3)
    assert len(lo) == 0
    lo.set_epoch(0, start_step=5)  # past the end (a resume with fewer steps per epoch): nothing left, not -2
    assert len(lo) == 0


def test_set_augment_turns_mixing_on_only_for_an_active_spec_and_an_even_batch(monkeypatch):
    lo = loader(monkeypatch, batch_size=4)
    lo.set_augment(MixSpec(mixup_alpha=0.8))
    assert lo.mix == MixSpec(mixup_alpha=0.8) and lo.plan_name() == "train_pairs"
    assert lo.extras_keys == ["mix_box", "mix_lam"]
    lo.set_augment(MixSpec())  # inactive: off again
    assert lo.mix is None and lo.plan_name() == "train" and lo.extras_keys == []
    odd = loader(monkeypatch, batch_size=3)
    odd.set_augment(None)  # no mixing: an odd batch is fine
    odd.set_augment(MixSpec(cutmix_alpha=0.0, mixup_alpha=0.0))
    assert odd.mix is None
    with pytest.raises(BadInputError, match="must be even, got 3"):
        odd.set_augment(MixSpec(cutmix_alpha=1.0))


@pytest.mark.parametrize("num_samples, batch, world", [(7, 4, 1), (13, 4, 2), (11, 6, 1), (15, 8, 1), (5, 2, 2)])
def test_every_pair_valid_mask_on_the_device_matches_the_plan(monkeypatch, num_samples, batch, world):
    """The odd sample's second copy is not valid wherever it sits in the batch (positions 2j + 1 for any j)."""
    found = False
    for rank in range(world):
        lo = loader(monkeypatch, n=num_samples, batch_size=batch, rank=rank, world=world)
        lo.set_plan("every_sample")
        lo.set_augment(MixSpec(mixup_alpha=1.0))
        _, valid = every_pair_indices(num_samples, batch, rank, world, lo.aug_seed, 0)
        assert lo.steps() == len(valid)
        for step in range(lo.steps()):
            assert lo.valid(step).tolist() == valid[step].tolist(), (rank, step)
        odd_copy = np.argwhere(valid.reshape(-1, 2)[:, 0] & ~valid.reshape(-1, 2)[:, 1])
        found |= any(int(p) % (batch // 2) > 0 for p in odd_copy.ravel()[:1])
    if (num_samples, batch, world) in ((7, 4, 1), (11, 6, 1), (15, 8, 1)):
        assert found  # the case this test is for: the odd pair is not the batch's first pair


def test_extras_keys_are_learnt_from_one_call_on_sample_0_of_epoch_0(monkeypatch):
    calls = []

    def extras(epoch, index, views):
        calls.append((epoch, index.tolist(), views))
        return {"tag": np.zeros((len(index), views), np.float32)}

    lo = loader(monkeypatch)
    lo.attach_extras(extras)
    assert calls[0] == (0, [0], 1) and lo.extras_keys == ["tag"]
