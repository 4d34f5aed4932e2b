"""What the DALI and torchvision loaders share: the epoch's sample plan, the replayed views of each step,
the replayed augmentations (`set_augment`), per-sample extras, and the resume state. A subclass decodes;
this class decides what is decoded.

Augmentations (`set_augment`, train loaders): RandAugment's operations and signs per view
(rand_augment.py), applied by the subclass after the crop; mixup / CutMix parameters per sample
(mix_draws.py), carried with each batch as the extras `mix_lam` and `mix_box` for the trainer to apply on
the device (pipeline/mixing.py), with the plans switched to their pair versions (sharding.PAIRED) so that
mates sit side by side. Both are pure functions of (aug_seed, epoch, index[, view]), like the views.

A loader's batches are fixed by (plan, epoch, step): the plan (sharding.py) names the samples of each
step, views.py the crop window and flip of each view of each of them, and nothing draws a random number
anywhere else. So `set_epoch(epoch, start_step)` alone replays any step exactly, in a resumed run too;
`state_dict()` only records where the loader is and what it was built with, so that a resume with other
settings (another aug_seed, batch, world size, decoder) is named instead of silently differing.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from pipeline.data.folder import FolderListing
from pipeline.data.mix_draws import MIX_KEYS, MixSpec, mix_draws
from pipeline.data.rand_augment import RandAugmentSpec, rand_augment_draws
from pipeline.data.sample_table import SampleTable, sample_table
from pipeline.data.sharding import PAIRED, PLANS, epoch_plan, every_pair_steps, pair_steps, train_steps, val_indices
from pipeline.data.views import Views, view_windows
from pipeline.data.webdataset import Shards
from pipeline.errors import BadInputError

log = logging.getLogger(__name__)

# fn(epoch, index (B,) int64, views) -> {key: array (B, views, ...)}: see `attach_extras`
ExtrasFn = Callable[[int, np.ndarray, int], "dict[str, np.ndarray]"]


class PlannedLoader:
    """Plan, views, extras and resume state of one loader (train or val) of one process."""

    decoder = ""  # set by the subclass: what turns bytes into pixels (named when a resume changes it)

    def __init__(self, source: FolderListing | Shards, *, train: bool, views: int, batch_size: int, image_size: int,
                 min_area: float, seed: int, aug_seed: int | None, rank: int, world: int, device: torch.device):
        self.source, self.train, self.views = source, train, views if train else 1
        self.batch_size, self.image_size, self.min_area = batch_size, image_size, min_area
        self.seed, self.aug_seed = seed, seed if aug_seed is None or aug_seed < 0 else aug_seed
        self.rank, self.world, self.device = rank, world, device
        self.num_classes, self.num_samples = source.num_classes, len(source)
        if isinstance(source, Shards):
            source.offsets  # parse the index files once, here: loader workers fork with the table
        self.table = sample_table(source)
        if train and len(self.table.unreadable()):
            bad = [source.describe(int(self.table.position[i])) for i in self.table.unreadable()[:10]]
            raise BadInputError(f"{len(self.table.unreadable())} train images have no readable image header "
                                f"(their size is needed for the crop windows), e.g. {', '.join(bad)}; "
                                "`python launch/check_dataset.py ROOT` lists every bad file")
        self.plan_kind = "train" if train else "val"
        self.epoch, self.start_step = 0, 0
        self.max_steps: int | None = None  # train plan: the trainer's steps per epoch, when it takes fewer
        self.extras_fn: ExtrasFn | None = None  # what batches carry: the attached function and the mixing's
        self.extras_keys: list[str] = []
        self.user_extras: ExtrasFn | None = None  # the function given to `attach_extras`
        self.mix: MixSpec | None = None
        self.rand_augment: RandAugmentSpec | None = None
        self.position = (0, 0)  # (epoch, steps of it consumed): what state_dict records
        self._arange = torch.arange(batch_size, device=device)  # validity masks are computed on the device

    # ---- the plan ----
    def set_plan(self, kind: str):
        """Train loaders: `"train"` (the default: a new permutation each epoch, ragged tail dropped) or
        `"every_sample"` (the teacher-cache pass: every dataset index once per epoch, split over ranks as
        validation is, padded, batches carry `valid`; the views are still the train views of the epoch)."""
        if not self.train:
            raise ValueError("set_plan: the validation loader has one plan")
        if kind not in PLANS:
            raise ValueError(f"unknown sample plan {kind!r}; choose from {', '.join(PLANS)}")
        self.plan_kind = kind

    def plan_name(self) -> str:
        """The sharding plan read: the pair version of the plan while the loader mixes."""
        return PAIRED.get(self.plan_kind, self.plan_kind) if self.mix else self.plan_kind

    def epoch_plan(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(steps, B) dataset indices of the whole current epoch and its validity mask (None: all valid)."""
        if self.plan_kind == "val":
            return val_indices(self.num_samples, self.batch_size, self.rank, self.world)
        index, valid = epoch_plan(self.plan_name(), self.num_samples, self.batch_size, self.rank, self.world,
                                  self.seed, self.epoch, self.aug_seed)
        return index[:self.steps()], valid

    def padded(self) -> bool:
        """Whether batches carry `valid` (validation and the every-sample plan)."""
        return self.plan_kind != "train"

    def steps(self) -> int:
        """Steps of a whole epoch (without drawing the train permutation)."""
        if self.plan_kind == "train":
            count = pair_steps if self.mix else train_steps
            steps = count(self.num_samples, self.batch_size, self.world)
            return steps if self.max_steps is None else min(steps, self.max_steps)
        if self.plan_kind == "every_sample" and self.mix:
            return every_pair_steps(self.num_samples, self.batch_size, self.world)
        per_rank = -(-self.num_samples // self.world)
        return -(-per_rank // self.batch_size)

    def limit_steps(self, steps: int):
        """Train epochs of at most `steps` steps (`train.steps_per_epoch`); the every-sample plan is never cut."""
        self.max_steps = steps

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Select the epoch (its order and views); `start_step` skips the steps a resumed run already took."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return max(0, self.steps() - self.start_step)

    def sample_labels(self) -> torch.Tensor:
        """(num_samples,) int64: the class of every sample, by dataset index (CRD's negative sampler)."""
        return torch.as_tensor(self.table.labels)

    def valid(self, step: int) -> torch.Tensor:
        """(B,) bool on the device, False on padding: a padded plan gives rank r the dataset indices r,
        r + world, ... (sharding.val_indices), so position p of step s is valid when that index exists;
        `every_pair` gives it pairs r, r + world, ... and the odd sample's second copy is not valid."""
        if self.plan_name() != "every_pair":
            return self.rank + self.world * (step * self.batch_size + self._arange) < self.num_samples
        pairs = -(-self.num_samples // 2)
        q = self.rank + self.world * (step * (self.batch_size // 2) + self._arange // 2)
        second_of_odd = (q == pairs - 1) & (self._arange % 2 == 1) & (self.num_samples % 2 == 1)
        return (q < pairs) & ~second_of_odd

    # ---- views and extras of a step ----
    def view_params(self, index: np.ndarray, epoch: int) -> Views:
        """The crop windows and flips of `epoch`'s views of `index` (train augmentation)."""
        return replayed_views(self.table, self.aug_seed, epoch, index, self.views, self.min_area)

    def attach_extras(self, fn: ExtrasFn | None):
        """Hand per-sample arrays along with the images: `fn(epoch, index, views)` gets the step's dataset
        indices (B,) int64 and returns {key: array shaped (B, views, ...)}; every batch then carries each
        key as a tensor on the device shaped (views * B, ...), view-major like `images` (row v * B + b is
        view v of sample b). `fn` runs where the batch is assembled (DALI: the external source, so the
        arrays reach the GPU with the images; torchvision: inside the worker processes). The keys are
        learnt by calling it once on sample 0; None detaches. The mixing's keys are carried beside them."""
        if fn is not None:
            clash = set(fn(0, np.zeros(1, dtype=np.int64), self.views)) & {"images", "labels", "index", "valid",
                                                                           *MIX_KEYS}
            if clash:
                raise ValueError(f"attach_extras: keys {sorted(clash)} are the batch's own")
        self.user_extras = fn
        self.extras_fn = Carried(fn, self.mix, self.aug_seed, self.image_size) if fn or self.mix else None
        self.extras_keys = []
        if self.extras_fn is not None:
            self.extras_keys = sorted(self.extras(np.zeros(1, dtype=np.int64), 0))

    def set_augment(self, mix: MixSpec | None = None, rand_augment: RandAugmentSpec | None = None):
        """Train loaders: mixup / CutMix parameters carried with each batch (and the pair plans), RandAugment
        applied after the crop; None or an inactive spec turns each off. Set before iterating."""
        if not self.train:
            raise ValueError("set_augment: the validation loader is not augmented")
        mix = mix if mix is not None and mix.active else None
        if mix is not None and self.batch_size % 2:
            raise BadInputError(f"mixup / CutMix pair each sample with a mate in the same batch: the per-process "
                                f"batch must be even, got {self.batch_size} (train.batch_size / global_batch_size)")
        self.mix = mix
        self.rand_augment = rand_augment if rand_augment is not None and rand_augment.active else None
        self.attach_extras(self.user_extras)  # the mixing's keys join the extras (a subclass rebuilds)

    def rand_augment_params(self, index: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray] | None:
        """RandAugment's (operations, negate flags) of `epoch`'s views of `index`, (B, views, num_ops) each."""
        if self.rand_augment is None:
            return None
        return rand_augment_draws(self.aug_seed, epoch, index, views=self.views, num_ops=self.rand_augment.num_ops)

    def extras(self, index: np.ndarray, epoch: int) -> dict[str, np.ndarray]:
        """The attached extras of `index` at `epoch`, shape-checked."""
        return call_extras(self.extras_fn, self.extras_keys, epoch, index, self.views)

    # ---- resume state: saved per process in every checkpoint ----
    def fingerprint(self) -> dict:
        """What decides the batches: a resume that changes any of it is not exact."""
        return {"num_samples": self.num_samples, "batch_size": self.batch_size, "views": self.views,
                "image_size": self.image_size, "min_area": self.min_area, "max_steps": self.max_steps,
                "seed": self.seed, "aug_seed": self.aug_seed, "rank": self.rank, "world": self.world,
                "decoder": self.decoder, "mix": self.mix.as_dict() if self.mix else None,
                "rand_augment": self.rand_augment.as_dict() if self.rand_augment else None}

    def state_dict(self) -> dict:
        """Where the loader is (epoch, steps of it consumed, plan) and what it was built with."""
        return {**self.fingerprint(), "plan": self.plan_kind, "epoch": self.position[0], "step": self.position[1]}

    def load_state_dict(self, state: dict | None, where: str = "the checkpoint"):
        """Check a saved state against this loader: the batches replay from (epoch, step) alone, so there
        is nothing to restore, but a difference in what decides them is said loudly, naming it."""
        if state is None:
            log.info("%s holds no loader state for process %d: the batches replay from the trainer's epoch "
                     "and step", where, self.rank)
            return
        differs = [f"{k} {state.get(k)!r} -> {v!r}" for k, v in self.fingerprint().items() if state.get(k) != v]
        if differs:
            log.warning("RESUME NOT EXACT: the loader state in %s was saved with other settings (%s): the "
                        "rest of the run reads other batches than the uninterrupted one would", where,
                        ", ".join(differs))


def replayed_views(table: SampleTable, aug_seed: int, epoch: int, index: np.ndarray, views: int,
                   min_area: float) -> Views:
    """views.view_windows on the stored image sizes of `index`."""
    sizes = table.sizes[index]
    return view_windows(aug_seed, epoch, index, sizes[:, 0], sizes[:, 1], views=views, min_area=min_area)


class Carried:
    """The extras function batches carry: the attached one's arrays and the mixing parameters of each view
    (the same for both views of a sample). A class, not a closure: a spawned worker can unpickle it."""

    def __init__(self, fn: ExtrasFn | None, mix: MixSpec | None, aug_seed: int, image_size: int):
        self.fn, self.mix, self.aug_seed, self.image_size = fn, mix, aug_seed, image_size

    def __call__(self, epoch: int, index: np.ndarray, views: int) -> dict[str, np.ndarray]:
        arrays = dict(self.fn(epoch, index, views)) if self.fn is not None else {}
        if self.mix is not None:
            lam, box = mix_draws(self.aug_seed, epoch, index, self.mix, height=self.image_size, width=self.image_size)
            arrays["mix_lam"] = np.repeat(lam[:, None], views, axis=1)
            arrays["mix_box"] = np.repeat(box[:, None], views, axis=1)
        return arrays


def call_extras(fn: ExtrasFn | None, keys: list[str], epoch: int, index: np.ndarray,
                views: int) -> dict[str, np.ndarray]:
    """fn's arrays for `index` at `epoch`, each checked to be (B, views, ...) and the keys to be `keys`."""
    if fn is None:
        return {}
    arrays = fn(epoch, index, views)
    for key, value in arrays.items():
        if np.shape(value)[:2] != (len(index), views):
            raise ValueError(f"attach_extras: {key!r} has shape {np.shape(value)}; expected "
                             f"({len(index)}, {views}, ...) for {len(index)} samples and {views} views")
    if keys and sorted(arrays) != keys:
        raise ValueError(f"attach_extras: keys {sorted(arrays)} differ from the first call's {keys}")
    return arrays
