"""Which samples each process reads: the one home of the sample plans, shared by both loaders.

Train: a seeded permutation per epoch, split over processes, equal steps on every rank, the ragged
last batch dropped (constant shapes for torch.compile). Val: every sample exactly once across
processes, padded to whole batches with `valid = False` (pad and mask, never duplicate a count).
Every sample (`every_sample`, the teacher-cache pass over the train set): the validation split of the
dataset indices (rank r: r, r + world, ...; padded, with `valid`), the same for every epoch: only the
views change with the epoch. `epoch_plan(kind, ...)` picks one by name (PLANS).
"""
from __future__ import annotations

import numpy as np


def train_steps(num_samples: int, batch_size: int, world: int) -> int:
    return (num_samples // world) // batch_size


def train_indices(num_samples: int, batch_size: int, rank: int, world: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, batch_size) sample indices for this rank and epoch."""
    steps = train_steps(num_samples, batch_size, world)
    perm = np.random.default_rng([seed, epoch]).permutation(num_samples)
    mine = perm[rank::world][: steps * batch_size]
    return mine.reshape(steps, batch_size)


def val_indices(num_samples: int, batch_size: int, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, batch_size) sample indices and validity mask; rank r takes samples r, r + world, ..."""
    per_rank = -(-num_samples // world)
    steps = -(-per_rank // batch_size)
    idx = rank + world * np.arange(steps * batch_size)
    valid = idx < num_samples
    idx = np.where(valid, idx, 0)  # padding reads sample 0 and is masked out of every count
    return idx.reshape(steps, batch_size), valid.reshape(steps, batch_size)


PLANS = ("train", "every_sample")  # what a train loader's `set_plan` accepts


def epoch_plan(kind: str, num_samples: int, batch_size: int, rank: int, world: int, seed: int,
               epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(steps, batch_size) dataset indices of one epoch of plan `kind`, and its validity mask (None: all valid)."""
    if kind == "train":
        return train_indices(num_samples, batch_size, rank, world, seed, epoch), None
    if kind == "every_sample":
        return val_indices(num_samples, batch_size, rank, world)
    raise ValueError(f"unknown sample plan {kind!r}; choose from {', '.join(PLANS)}")
