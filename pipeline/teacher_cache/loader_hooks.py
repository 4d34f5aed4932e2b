"""The only place the teacher cache touches the loaders (pipeline/data), so a change there is one edit here.

It relies on two hooks of the loaders (branch `views`, ../../../shared decisions 2 and 4): the cache
pass's "every sample" train plan (every dataset index once per epoch, rank r: r, r + world, ..., padded
and marked with `valid`, with that epoch's replayed train views), and `attach_extras(fn)`, through which
a run's batches carry the cached records (fn(epoch, index (B,), views) -> {key: (B, views, ...)}; each
batch then holds key: (views * B, ...) view-major on the device).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.config import Config
from pipeline.data import build_loaders


def train_listing(loader) -> tuple[list[str], np.ndarray, int]:
    """(sample names in index order, their labels, the class count) of a train loader's dataset: file
    paths relative to the split's root, or `tar#position` for webdataset shards."""
    source = getattr(loader, "listing", None) or loader.source  # torchvision | DALI loader
    if hasattr(source, "files"):
        names = list(source.files)
    else:
        names = [f"{tar.name}#{j}" for tar, size in zip(source.tars, source.sizes) for j in range(size)]
    return names, np.asarray(source.sample_labels(), dtype=np.int64), source.num_classes


def cache_pass_loaders(cfg: Config, *, batch_size: int, views: int, rank: int, world: int, device: torch.device):
    """(train, val) for the cache pass: train walks every sample once per epoch (rank r: r, r + world, ...,
    padded with valid = False), with the train augmentation of each epoch's replayed views."""
    train, val = build_loaders(cfg.data, batch_size=batch_size, views=views, seed=cfg.train.seed, rank=rank,
                               world=world, device=device)
    if not hasattr(train, "use_every_sample_plan"):
        raise NotImplementedError("the loaders have no 'every sample' train plan yet (branch views)")
    train.use_every_sample_plan()
    return train, val


def attach_cache(loader, reader) -> None:
    """A run's train loader: every batch carries the records of its samples (reader: a CacheReader)."""
    loader.attach_extras(reader)
