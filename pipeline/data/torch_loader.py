"""The torchvision loader: PIL decode + torchvision functional transforms in DataLoader workers.

The fallback when DALI is not installed, and the reference the DALI loader is checked against. Train
views are the replayed ones (views.py): each sample is decoded once, then each view is its window of
the stored image (`resized_crop`, bilinear with antialias, to image_size x image_size) and its flip, so
the windows are exactly the DALI loader's; RandAugment (when set) then applies the view's replayed
operations to the crop with torchvision's code (rand_augment.py), before the flip. Val: resize the shorter
side to val_resize, centre crop.
A whole batch is assembled in a worker (`__getitems__`): views, labels, indices and attached extras,
view-major, in pinned memory on CUDA.
"""
from __future__ import annotations

import os
import weakref

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from pipeline.data.folder import FolderListing
from pipeline.data.planned import PlannedLoader, call_extras, replayed_views
from pipeline.data.rand_augment import TorchvisionRandAugment, rand_augment_draws
from pipeline.data.webdataset import Shards


def _as_is(batch):
    """The DataLoader's collate step: `ImageFiles.__getitems__` already returns the batch."""
    return batch


def view_major(array: np.ndarray) -> torch.Tensor:
    """(B, views, ...) -> (views * B, ...): row v * B + b is view v of sample b (the images' layout)."""
    array = np.asarray(array)
    return torch.from_numpy(np.ascontiguousarray(array.swapaxes(0, 1)).reshape(-1, *array.shape[2:]))


class ImageFiles(Dataset):
    """Keys (dataset index, epoch) -> one batch dict. Sample i is the listing's i-th file, or the tar
    sample whose `.index` member says i (positions from the sample table). Forked into the workers: it
    holds what a batch needs (source, table, view settings, the extras function), never the loader, whose
    DataLoader a worker must not own."""

    def __init__(self, loader: "TorchLoader", val_resize: int, mean, std):
        self.source, self.table, self.train, self.views = loader.source, loader.table, loader.train, loader.views
        self.aug_seed, self.min_area, self.size = loader.aug_seed, loader.min_area, loader.image_size
        self.extras_fn, self.extras_keys = None, []
        self.rand_augment, self.num_ops = None, 0
        self.val_transform = transforms.Compose([transforms.Resize(val_resize), transforms.CenterCrop(self.size)])
        self.mean, self.std = mean, std

    def sync(self, loader: "TorchLoader"):
        """Take the loader's extras and RandAugment (before the workers fork)."""
        self.extras_fn, self.extras_keys = loader.extras_fn, loader.extras_keys
        spec = loader.rand_augment
        self.rand_augment = TorchvisionRandAugment(spec, self.size) if spec else None
        self.num_ops = spec.num_ops if spec else 0

    def __len__(self):
        return len(self.table.labels)

    def __getitem__(self, key):
        return self.__getitems__([key])

    def __getitems__(self, keys: list[tuple[int, int]]) -> dict:
        index = np.array([k[0] for k in keys], dtype=np.int64)
        epoch = keys[0][1]
        params = ops = None
        if self.train:
            params = replayed_views(self.table, self.aug_seed, epoch, index, self.views, self.min_area)
            if self.rand_augment is not None:
                ops, negate = rand_augment_draws(self.aug_seed, epoch, index, views=self.views, num_ops=self.num_ops)
        views: list[list[torch.Tensor]] = [[] for _ in range(self.views)]
        for b, i in enumerate(index.tolist()):
            image = self.decode(i)
            for v in range(self.views):
                if params is None:
                    crop = self.val_transform(image)
                else:
                    x, y, w, h = params.windows[b, v].tolist()
                    crop = F.resized_crop(image, y, x, h, w, [self.size, self.size], InterpolationMode.BILINEAR,
                                          antialias=True)
                    if ops is not None:
                        crop = self.rand_augment(crop, ops[b, v], negate[b, v])
                    if params.flips[b, v]:
                        crop = F.hflip(crop)
                views[v].append(F.normalize(F.to_tensor(crop), self.mean, self.std))
        batch = {"images": torch.stack([t for view in views for t in view]),
                 "labels": torch.from_numpy(self.table.labels[index]), "index": torch.from_numpy(index)}
        extras = call_extras(self.extras_fn, self.extras_keys, epoch, index, self.views)
        batch.update({k: view_major(a) for k, a in extras.items()})
        return batch

    def decode(self, i: int) -> Image.Image:
        """The RGB image of dataset index i; a file that cannot be decoded (or whose size is not the one
        the crop windows were drawn for) is an error naming it: a silent skip would change the epoch."""
        position = int(self.table.position[i])
        try:
            data = self.source.load(position)[0]
            with Image.open(data) as img:
                image = img.convert("RGB")
        except Exception as e:
            raise RuntimeError(f"cannot decode image {self.source.describe(position)}: {e}") from e
        height, width = self.table.sizes[i].tolist()
        if self.train and image.size != (width, height):
            raise RuntimeError(f"{self.source.describe(position)} is {image.size[0]} x {image.size[1]} pixels but "
                               f"the sample table says {width} x {height}: the file changed while the loader ran")
        return image


def _leave_trainer_process_group(worker_id: int):
    """The torchrun agent signals the trainer's whole process group (SIGUSR1/SIGTERM before preemption); a
    worker killed by it would crash the trainer before its checkpoint. In a group of its own a worker
    keeps default signal handling, so the DataLoader's own shutdown (SIGTERM to the worker) still works,
    and it exits by itself when the trainer dies (the DataLoader's parent watchdog)."""
    os.setpgid(0, 0)


class _Batches:
    """Batch sampler over this rank's plan; reads the loader's epoch, plan and start step at each iteration
    and hands the epoch to the dataset with each index (persistent workers never see the loader change)."""

    def __init__(self, loader: "TorchLoader"):
        # a weak reference: no cycle through the DataLoader, so a dropped loader shuts its workers down at
        # once (not whenever the garbage collector runs, perhaps inside a newly forked worker)
        self._loader = weakref.ref(loader)

    @property
    def loader(self) -> "TorchLoader":
        return self._loader()

    def __iter__(self):
        epoch = self.loader.epoch
        index = self.loader.epoch_plan()[0][self.loader.start_step:]
        yield from ([(i, epoch) for i in batch.tolist()] for batch in index)

    def __len__(self):
        return len(self.loader)


class TorchLoader(PlannedLoader):
    """Yields dict batches: images ((views * B) x 3 x H x W float, normalised, view-major; channels_last
    on CUDA), labels, index, valid (padded plans) and attached extras, on the device."""

    decoder = "torchvision-pil"

    def __init__(self, listing: FolderListing | Shards, *, train: bool, batch_size: int, views: int, image_size: int,
                 val_resize: int, min_area: float, mean, std, workers: int, seed: int, rank: int, world: int,
                 device: torch.device, aug_seed: int | None = None):
        super().__init__(listing, train=train, views=views, batch_size=batch_size, image_size=image_size,
                         min_area=min_area, seed=seed, aug_seed=aug_seed, rank=rank, world=world, device=device)
        self.listing, self.workers = listing, workers
        self.dataset = ImageFiles(self, val_resize, mean, std)
        self._loader = self._data_loader()

    def _data_loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_sampler=_Batches(self), num_workers=self.workers, collate_fn=_as_is,
                          pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
                          worker_init_fn=_leave_trainer_process_group)

    def attach_extras(self, fn):
        super().attach_extras(fn)
        self.dataset.sync(self)
        self._loader = self._data_loader()  # the workers fork with the loader: new ones see the function

    def __iter__(self):
        layout = torch.channels_last if self.device.type == "cuda" else torch.preserve_format
        padded = self.padded()
        for step, batch in enumerate(self._loader, start=self.start_step):
            images = batch.pop("images").to(self.device, non_blocking=True, memory_format=layout)
            batch = {"images": images, **{k: v.to(self.device, non_blocking=True) for k, v in batch.items()}}
            if padded:
                batch["valid"] = self.valid(step)
            self.position = (self.epoch, step + 1)
            yield batch
