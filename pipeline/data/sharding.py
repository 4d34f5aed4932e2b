"""Which samples each process reads: the one home of the sample plans, shared by both loaders.

Train: a seeded permutation per epoch, split over processes, equal steps on every rank, the ragged
last batch dropped (constant shapes for torch.compile). Val: every sample exactly once across
processes, padded to whole batches with `valid = False` (pad and mask, never duplicate a count).
Every sample (`every_sample`, the teacher-cache pass over the train set): the validation split of the
dataset indices (rank r: r, r + world, ...; padded, with `valid`), the same for every epoch: only the
views change with the epoch. `epoch_plan(kind, ...)` picks one by name (PLANS).

Pairs (mixup and CutMix, pipeline/data/mix_draws.py): a sample mixes with its pair-mate, the sample next
to it in the epoch's mate permutation (positions 2k and 2k + 1; `pair_permutation`), drawn from the views'
key (data.aug_seed, epoch) like the mixing's lambda and box, so a sample's mixed image is a pure function
of (aug_seed, epoch, index): the same for any train.seed, world size and even batch (a teacher cache made
with mixing serves every seed). `train_pairs` is the train plan with whole pairs: the pairs in an order
drawn from (train.seed, epoch), split over ranks (rank r: pairs r, r + world, ...) and batches, mates always
side by side (batch positions 2j and 2j + 1). With an odd number of samples the mate permutation's last
one has no mate and sits the epoch out, like the ragged tail. `every_pair` is `every_sample` for a
run that mixes (the teacher-cache pass): every pair of the epoch once, split over ranks pair by pair
(padded with `valid` False), and the odd sample as a pair with itself (its second copy not valid): mixing
with itself leaves it unchanged, and it is never trained on in that epoch anyway.
"""
from __future__ import annotations

import numpy as np


def train_steps(num_samples: int, batch_size: int, world: int) -> int:
    return (num_samples // world) // batch_size


def train_indices(num_samples: int, batch_size: int, rank: int, world: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, batch_size) sample indices for this rank and epoch."""
    steps = train_steps(num_samples, batch_size, world)
    mine = permutation(num_samples, seed, epoch)[rank::world][: steps * batch_size]
    return mine.reshape(steps, batch_size)


def val_indices(num_samples: int, batch_size: int, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, batch_size) sample indices and validity mask; rank r takes samples r, r + world, ..."""
    per_rank = -(-num_samples // world)
    steps = -(-per_rank // batch_size)
    idx = rank + world * np.arange(steps * batch_size)
    valid = idx < num_samples
    idx = np.where(valid, idx, 0)  # padding reads sample 0 and is masked out of every count
    return idx.reshape(steps, batch_size), valid.reshape(steps, batch_size)


def permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of the dataset indices (every train plan reads it)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


MATES = 0x6D617465  # the mate permutation's own stream: with aug_seed == train.seed it differs from the order's


def pair_permutation(num_samples: int, aug_seed: int, epoch: int) -> np.ndarray:
    """(num_samples // 2, 2): the epoch's pairs of mates, drawn from (aug_seed, epoch); an odd last sample
    is left out."""
    perm = np.random.default_rng([aug_seed, epoch, MATES]).permutation(num_samples)
    return perm[:num_samples - num_samples % 2].reshape(-1, 2)


def _half(batch_size: int) -> int:
    if batch_size % 2:
        raise ValueError(f"a pair plan needs an even batch, got {batch_size}")
    return batch_size // 2


def pair_steps(num_samples: int, batch_size: int, world: int) -> int:
    return (num_samples // 2 // world) // _half(batch_size)


def every_pair_steps(num_samples: int, batch_size: int, world: int) -> int:
    pairs = -(-num_samples // 2)  # the odd sample is a pair of its own
    return -(-(-(-pairs // world)) // _half(batch_size))


def train_pair_indices(num_samples: int, batch_size: int, rank: int, world: int, seed: int, epoch: int,
                       aug_seed: int) -> np.ndarray:
    """(steps, batch_size) sample indices for this rank and epoch, mates at positions 2j and 2j + 1: the
    pairs of (aug_seed, epoch) in the order of (seed, epoch)."""
    steps, half = pair_steps(num_samples, batch_size, world), _half(batch_size)
    pairs = pair_permutation(num_samples, aug_seed, epoch)
    mine = pairs[permutation(len(pairs), seed, epoch)][rank::world][:steps * half]
    return mine.reshape(steps, batch_size)


def every_pair_indices(num_samples: int, batch_size: int, rank: int, world: int, aug_seed: int,
                       epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, batch_size) indices and validity mask: every pair of the epoch once across ranks (and the odd
    sample with itself), rank r taking pairs r, r + world, ...; padding reads sample 0, not valid."""
    pairs = pair_permutation(num_samples, aug_seed, epoch)
    odd = num_samples % 2 == 1
    if odd:  # the sample the mate permutation left out
        left = np.setdiff1d(np.arange(num_samples), pairs.ravel())
        pairs = np.concatenate([pairs, np.repeat(left, 2)[None]])
    steps = every_pair_steps(num_samples, batch_size, world)
    q = rank + world * np.arange(steps * _half(batch_size))  # this rank's pair numbers
    exists = q < len(pairs)
    index = np.where(exists[:, None], pairs[np.minimum(q, len(pairs) - 1)], 0)
    valid = np.stack([exists, exists & ~(odd & (q == len(pairs) - 1))], axis=1)  # the odd sample counts once
    return index.reshape(steps, batch_size), valid.reshape(steps, batch_size)


PLANS = ("train", "every_sample")  # what a train loader's `set_plan` accepts
PAIRED = {"train": "train_pairs", "every_sample": "every_pair"}  # the same plans for a run that mixes


def epoch_plan(kind: str, num_samples: int, batch_size: int, rank: int, world: int, seed: int,
               epoch: int, aug_seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(steps, batch_size) dataset indices of one epoch of plan `kind`, and its validity mask (None: all valid);
    the pair plans need the views' `aug_seed` (it draws the mates)."""
    if kind in ("train_pairs", "every_pair") and aug_seed is None:
        raise ValueError(f"the {kind} plan needs aug_seed: it draws the mates")
    if kind == "train":
        return train_indices(num_samples, batch_size, rank, world, seed, epoch), None
    if kind == "every_sample":
        return val_indices(num_samples, batch_size, rank, world)
    if kind == "train_pairs":
        return train_pair_indices(num_samples, batch_size, rank, world, seed, epoch, aug_seed), None
    if kind == "every_pair":
        return every_pair_indices(num_samples, batch_size, rank, world, aug_seed, epoch)
    raise ValueError(f"unknown sample plan {kind!r}; choose from {', '.join(PLANS)}")
