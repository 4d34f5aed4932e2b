"""The torchvision loader: PIL decode + torchvision transforms in DataLoader workers (CPU only).

The fallback when DALI is not installed, and the reference the DALI loader is checked against.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import transforms

from pipeline.data.folder import FolderListing
from pipeline.data.webdataset import Shards
from pipeline.data.sharding import train_indices, val_indices


def build_transform(train: bool, image_size: int, val_resize: int, min_area: float, mean, std):
    if train:
        steps = [transforms.RandomResizedCrop(image_size, scale=(min_area, 1.0)), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(val_resize), transforms.CenterCrop(image_size)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])


class ImageFiles(Dataset):
    """(sample i, epoch) -> (views, class label, dataset index); each view is an independent transform of one
    decode. Sample i is the listing's i-th file, or the i-th sample of the tars (its index is the tar's).

    The augmentation is seeded by (seed, epoch, i), so it does not depend on which worker reads the
    sample: a resumed run sees exactly the crops an uninterrupted one would.
    """

    def __init__(self, listing: FolderListing | Shards, transform, views: int, seed: int):
        self.listing, self.transform, self.views, self.seed = listing, transform, views, seed

    def __len__(self):
        return len(self.listing)

    def __getitem__(self, key):
        index, epoch = key
        if get_worker_info() is None:  # in the main process: keep the training RNG stream untouched
            with torch.random.fork_rng(devices=[]):
                return self._load(index, epoch)
        return self._load(index, epoch)

    def _load(self, index: int, epoch: int):
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]))
        try:
            data, label, dataset_index = self.listing.load(index)
            with Image.open(data) as img:
                img = img.convert("RGB")
        except Exception as e:  # name the file: a silent skip would change the epoch
            raise RuntimeError(f"cannot decode image {self.listing.describe(index)}: {e}") from e
        views = tuple(self.transform(img) for _ in range(self.views))
        return views, label, dataset_index


def collate_views(samples: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In the worker: [(views, label, index)] -> images (views * B, 3, H, W) view-major, labels, index.
    One tensor (the batch contract), written once here, not concatenated again on the device."""
    views = len(samples[0][0])
    images = torch.stack([s[0][v] for v in range(views) for s in samples])
    return images, torch.tensor([s[1] for s in samples]), torch.tensor([s[2] for s in samples])


def _leave_trainer_process_group(worker_id: int):
    """The torchrun agent signals the trainer's whole process group (SIGUSR1/SIGTERM before preemption); a
    worker killed by it would crash the trainer before its checkpoint. In a group of its own a worker
    keeps default signal handling, so the DataLoader's own shutdown (SIGTERM to the worker) still works,
    and it exits by itself when the trainer dies (the DataLoader's parent watchdog)."""
    os.setpgid(0, 0)


class _Batches:
    """Batch sampler over this rank's indices; reads the loader's epoch at each iteration and hands it
    to the dataset with each index (persistent workers never see the loader's attributes change)."""

    def __init__(self, loader: "TorchLoader"):
        self.loader = loader

    def __iter__(self):
        epoch = self.loader.epoch
        yield from ([(i, epoch) for i in batch.tolist()] for batch in self.loader._epoch_batches()[0])

    def __len__(self):
        return len(self.loader)


class TorchLoader:
    """Yields dict batches: images ((views * B) x 3 x H x W float, normalised, view-major; channels_last
    on CUDA), labels, index, valid."""

    def __init__(self, listing: FolderListing | Shards, *, train: bool, batch_size: int, views: int, image_size: int,
                 val_resize: int, min_area: float, mean, std, workers: int, seed: int, rank: int, world: int,
                 device: torch.device):
        self.listing, self.train, self.batch_size = listing, train, batch_size
        self.seed, self.rank, self.world, self.device = seed, rank, world, device
        self.epoch, self.start_step = 0, 0
        self.max_steps: int | None = None  # train: the trainer's steps per epoch, when it takes fewer
        self.num_classes, self.num_samples = listing.num_classes, len(listing)
        transform = build_transform(train, image_size, val_resize, min_area, mean, std)
        self.dataset = ImageFiles(listing, transform, views if train else 1, seed)
        self._loader = DataLoader(self.dataset, batch_sampler=_Batches(self), num_workers=workers,
                                  collate_fn=collate_views,
                                  pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                  worker_init_fn=_leave_trainer_process_group)

    def _epoch_batches(self) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(self.listing)
        if self.train:
            idx = train_indices(n, self.batch_size, self.rank, self.world, self.seed, self.epoch)
            return idx[self.start_step:self.max_steps], None
        return val_indices(n, self.batch_size, self.rank, self.world)

    def limit_steps(self, steps: int):
        """Train epochs of at most `steps` steps (`train.steps_per_epoch`)."""
        self.max_steps = steps

    def sample_labels(self) -> torch.Tensor:
        """(num_samples,) int64: the class of every sample, by dataset index."""
        return torch.as_tensor(self.listing.sample_labels())

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Select the epoch's order; `start_step` skips the steps a resumed run already took."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return len(self._epoch_batches()[0])

    def __iter__(self):
        _, valid = self._epoch_batches()
        layout = torch.channels_last if self.device.type == "cuda" else torch.preserve_format
        for step, (images, labels, index) in enumerate(self._loader):
            batch = {"images": images.to(self.device, non_blocking=True, memory_format=layout),
                     "labels": labels.to(self.device, non_blocking=True),
                     "index": index.to(self.device, non_blocking=True)}
            if valid is not None:
                batch["valid"] = torch.from_numpy(valid[step]).to(self.device)
            yield batch
