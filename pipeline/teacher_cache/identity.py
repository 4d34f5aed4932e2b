"""What decides the teacher's outputs on the cached views: the manifest's `made_from`, computed the same
way by the cache pass and by a run that reads the cache (so `match.py` compares like with like).

Each entry is label -> a JSON value; the labels are what an error names ("made with data.aug_seed 0").
"""
from __future__ import annotations

import numpy as np

from pipeline.config import Config
from pipeline.data.views import DRAWS_VERSION
from pipeline.models import Network
from pipeline.teacher_cache.manifest import listing_sha256, state_dict_sha256

TEACHER_WEIGHTS = "teacher weights"
TRAIN_LISTING = "train listing"
AUGMENT_KEYS = ("mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob", "randaug_ops", "randaug_magnitude")


def resolved_aug_seed(cfg: Config) -> int:
    """data.aug_seed, -1 meaning train.seed (the key arrives with the replayable views; until then the
    augmentation is seeded by train.seed)."""
    aug_seed = getattr(cfg.data, "aug_seed", -1)
    return cfg.train.seed if aug_seed < 0 else aug_seed


def teacher_identity(cfg: Config, teacher: Network) -> dict:
    """The teacher as built (weights loaded, before BatchNorm folding): arch, weights, and the input
    statistics its inputs are normalised to (its pretrained_cfg, which teacher.mean/std override)."""
    model = teacher.model
    mean = model.pretrained_cfg.get("mean", cfg.data.mean)
    std = model.pretrained_cfg.get("std", cfg.data.std)
    return {"teacher.arch": cfg.teacher.arch, TEACHER_WEIGHTS: state_dict_sha256(model.state_dict()),
            "teacher input mean": [round(float(m), 6) for m in mean],
            "teacher input std": [round(float(s), 6) for s in std]}


def data_identity(cfg: Config, names: list[str], labels: np.ndarray, num_classes: int) -> dict:
    """The train samples (names and labels in index order, and the class count), how their views are cut,
    and the augmentation on top (RandAugment, and the mixing: the teacher's outputs are for the mixed images)."""
    augment = {f"augment.{key}": getattr(cfg.augment, key) for key in AUGMENT_KEYS}
    return {TRAIN_LISTING: f"{len(names)} samples, {num_classes} classes, {listing_sha256(names, labels)}",
            "data.aug_seed": resolved_aug_seed(cfg), "data.image_size": cfg.data.image_size,
            "data.min_area": cfg.data.min_area, **augment, "replayed draws version": DRAWS_VERSION}


def made_from(cfg: Config, teacher: Network, names: list[str], labels: np.ndarray, num_classes: int) -> dict:
    return {**teacher_identity(cfg, teacher), **data_identity(cfg, names, labels, num_classes)}


def notes(cfg: Config) -> dict:
    """Where things came from, named in messages beside the compared values (never compared)."""
    source = cfg.teacher.checkpoint or ("timm pretrained" if cfg.teacher.pretrained else "random init")
    return {TEACHER_WEIGHTS: source, TRAIN_LISTING: cfg.data.root or "the demo data"}
