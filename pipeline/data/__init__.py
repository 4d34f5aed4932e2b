"""Loaders: `build_loaders` picks DALI or the torchvision fallback and returns (train, val).

Every loader yields dict batches on the training device:
  images: ((views * B) x 3 x H x W, float32, normalised with data.mean/std) ONE tensor, view-major
          (view 0's B images, then view 1's), channels_last on CUDA
  labels: (B,) int64 class labels
  index:  (B,) int64 dataset indices (what CRD's memory banks and the teacher cache are keyed by)
  valid:  (B,) bool, padded plans only (validation, `every_sample`): False on padding, which every count
          must skip
  <key>:  ((views * B) x ...) for each key of an attached extras function (below), view-major
and has `num_classes`, `num_samples` (dataset size), `len()` (steps per epoch, equal on every rank),
`set_epoch(epoch, start_step)`, `limit_steps(steps)`, `sample_labels()` and `state_dict()` /
`load_state_dict(state, where)`.

What decides a batch (planned.py): the plan (sharding.py) names the dataset indices of each step, and
views.py the crop window and flip of each view: a pure function of (data.aug_seed, epoch, index, view)
with torchvision RandomResizedCrop semantics, drawn on the image size read once from its header
(sample_table.py). Both backends cut the same windows; `set_epoch(epoch, start_step)` replays any step.

Hooks for the teacher cache and other per-sample data (train loaders of both backends):
  loader.attach_extras(fn)            fn(epoch: int, index: np.ndarray (B,) int64, views: int)
                                      -> dict[str, np.ndarray], each (B, views, ...); every batch then
                                      carries each key as a device tensor (views * B, ...), view-major.
                                      fn runs where batches are assembled: DALI's external source (the
                                      arrays are pipeline outputs and reach the GPU with the images) or
                                      the torchvision workers. Keys are learnt by one call on sample 0.
                                      `attach_extras(None)` detaches.
  loader.set_augment(mix, randaug)    mixup/CutMix parameters as the extras `mix_lam`, `mix_box` (and the pair plans:
                                      mates side by side), RandAugment after the crop (planned.py)
  loader.set_plan("every_sample")     every dataset index once per epoch, rank r reading r, r + world, ...
                                      (as validation does), padded to whole batches with `valid`; the
                                      views are the train views of the epoch set by `set_epoch`.
                                      `set_plan("train")` goes back. `limit_steps` does not cut it.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from pipeline.config import AugmentConfig, DataConfig
from pipeline.data.demo import prepare_demo_data
from pipeline.data.filelist import read_file_lists
from pipeline.data.folder import FolderListing, list_image_folder
from pipeline.data.mix_draws import MixSpec
from pipeline.data.rand_augment import RandAugmentSpec
from pipeline.data.torch_loader import TorchLoader
from pipeline.data.webdataset import Shards, list_shards
from pipeline.errors import BadInputError

log = logging.getLogger(__name__)


def dataset_root(cfg: DataConfig) -> Path:
    """The ImageNet-layout root: `data.root`, or the embedded demo data when it is empty."""
    return Path(cfg.root) if cfg.root else prepare_demo_data(cfg.demo_dir)


def dataset_sources(cfg: DataConfig, root: Path) -> tuple[FolderListing | Shards, FolderListing | Shards]:
    """(train, val) samples of `data.format`, the same for both backends."""
    if cfg.format == "folder":
        return list_image_folder(root / "train", cfg.per_class), list_image_folder(root / "val", cfg.val_per_class)
    if cfg.format == "filelist":
        return read_file_lists(root, cfg.per_class, cfg.val_per_class)
    if cfg.per_class or cfg.val_per_class:
        raise BadInputError("data.per_class / data.val_per_class need data.format folder or filelist "
                            "(shards are fixed): set them to 0")
    return list_shards(root / "train"), list_shards(root / "val")


def resolve_backend(cfg: DataConfig) -> str:
    dali_installed = importlib.util.find_spec("nvidia.dali") is not None
    if cfg.backend == "dali" and not dali_installed:
        raise BadInputError("data.backend is 'dali' but nvidia-dali is not installed (pip install nvidia-dali-cuda130)")
    if cfg.backend == "auto" and not dali_installed:
        log.warning("FALLBACK: NVIDIA DALI is not installed; using the torchvision DataLoader (CPU decode)")
        return "torch"
    return "torch" if cfg.backend == "torch" else "dali"


def aug_seed(cfg: DataConfig, seed: int) -> int:
    """`data.aug_seed`, or `seed` (train.seed) when it is -1."""
    return seed if cfg.aug_seed < 0 else cfg.aug_seed


def augment_specs(cfg: AugmentConfig) -> tuple[MixSpec, RandAugmentSpec]:
    return (MixSpec(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_prob, cfg.switch_prob),
            RandAugmentSpec(cfg.randaug_ops, cfg.randaug_magnitude))


def build_loaders(cfg: DataConfig, *, batch_size: int, views: int, seed: int, rank: int, world: int,
                  device: torch.device, train_plan: str = "train", augment: AugmentConfig | None = None):
    """Train loader (`views` views per image) and val loader (one view) for this process; `seed` orders
    the samples (train.seed), `data.aug_seed` draws the views and the `augment` section's draws;
    `train_plan` is the train loader's plan (`set_plan`), set before its size is checked."""
    train, val = _build_loaders(cfg, batch_size=batch_size, views=views, seed=seed, rank=rank, world=world,
                                device=device, train_plan=train_plan)
    if augment is not None:
        train.set_augment(*augment_specs(augment))
        if len(train) == 0:
            raise BadInputError(f"{train.num_samples} train images make fewer than one batch of {batch_size} (in mate pairs)"
                                f" per process on {world} processes; lower train.batch_size")
    return train, val


def _build_loaders(cfg: DataConfig, *, batch_size: int, views: int, seed: int, rank: int, world: int,
                   device: torch.device, train_plan: str):
    root = dataset_root(cfg)
    backend = resolve_backend(cfg)
    common = dict(batch_size=batch_size, image_size=cfg.image_size, val_resize=cfg.val_resize,
                  min_area=cfg.min_area, mean=cfg.mean, std=cfg.std, workers=cfg.workers, seed=seed,
                  aug_seed=aug_seed(cfg, seed), rank=rank, world=world, device=device)
    if backend == "dali":
        from pipeline.data.dali import build_dali_loaders

        return build_dali_loaders(cfg, root, views=views, train_plan=train_plan, **common)
    train_src, val_src = dataset_sources(cfg, root)
    train = TorchLoader(train_src, train=True, views=views, **common)
    train.set_plan(train_plan)
    val = TorchLoader(val_src, train=False, views=1, **common)
    if train.num_classes != val.num_classes:
        raise BadInputError(f"{root}: train has {train.num_classes} classes but val has {val.num_classes}")
    if len(train) == 0:
        raise BadInputError(f"{root / 'train'}: {len(train.listing)} images are fewer than one batch of "
                         f"{batch_size} per process on {world} processes; lower train.batch_size")
    return train, val
