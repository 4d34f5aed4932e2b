"""The only place the teacher cache touches the loaders (pipeline/data), so a change there is one edit here.

It uses two hooks of the train loaders (pipeline/data/__init__.py): the "every sample" plan
(`set_plan("every_sample")`: every dataset index once per epoch, rank r reading r, r + world, ...,
padded and marked with `valid`, with that epoch's replayed train views), which the cache pass walks, and
`attach_extras(fn)`, through which a run's batches carry the cached records (fn(epoch, index (B,),
views) -> {key: (B, views, ...)}; each batch then holds key: (views * B, ...) view-major on the device).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.config import Config
from pipeline.data import build_loaders
from pipeline.data.folder import FolderListing
from pipeline.data.webdataset import Shards


def train_listing(source) -> tuple[list[str], np.ndarray, int]:
    """(sample names in position order, the labels by dataset index, the class count) of a train listing
    (pipeline.data.dataset_sources) or of a loader's (its `source`): file paths relative to the split's
    root, or `tar#position` for webdataset shards."""
    source = getattr(source, "source", source)
    if isinstance(source, FolderListing):
        names = list(source.files)
    elif isinstance(source, Shards):
        names = [f"{tar.name}#{j}" for tar, size in zip(source.tars, source.sizes) for j in range(size)]
    else:
        raise TypeError(f"train_listing: not a folder listing or webdataset shards: {type(source).__name__}")
    return names, np.asarray(source.sample_labels(), dtype=np.int64), source.num_classes


def cache_pass_loaders(cfg: Config, *, batch_size: int, views: int, rank: int, world: int, device: torch.device):
    """(train, val) for the cache pass: train walks every sample once per epoch (rank r: r, r + world, ...,
    padded with valid = False), with the train augmentation of each epoch's replayed views (`augment.*`:
    RandAugment, and the mixing parameters that the pass applies before the teacher sees the batch)."""
    return build_loaders(cfg.data, batch_size=batch_size, views=views, seed=cfg.train.seed, rank=rank, world=world,
                         device=device, train_plan="every_sample", augment=cfg.augment)


def attach_cache(loader, reader) -> None:
    """A run's train loader: every batch carries the records of its samples (reader: a CacheReader)."""
    loader.attach_extras(reader)


def decoder(loader) -> str:
    """What turns a loader's bytes into pixels ('torchvision-pil', 'dali-cpu', 'dali-mixed')."""
    return loader.decoder
