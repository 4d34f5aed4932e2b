"""NVIDIA DALI loaders: the same batches, sample plans and indices as the torchvision loader, decoded by DALI.

Readers (`data.format`):
  folder      the shared listing (`folder.list_image_folder`), given to `fn.readers.file` as explicit
              `files=` / `labels=`, so sample i is the same file for both backends and CRD.
  filelist    `<root>/train.txt` and `<root>/val.txt`, lines `<path relative to root> <class>`; read the
              same way as folder.
  webdataset  tar shards + DALI index files read by `fn.readers.webdataset` (layout: dali/webdataset.py).

Sample order (folder/filelist): each epoch the reader gets this rank's files in the order of
`sharding.train_indices` / `val_indices` (the torchvision loader's plans), `random_shuffle=False` and
one reader shard (the list is already this rank's shard). That is exact by construction (same ranks,
same steps, ragged batch dropped, validation padded and masked) and costs no Python per sample: the
C++ reader thread reads the files. The pipeline is rebuilt per epoch (a fraction of a second on CPU,
against minutes of epoch) so the list and the random seed can change.

Webdataset keeps sequential tar reads, so it cannot follow an arbitrary per-sample plan: the tars are
visited in a seeded per-epoch order, the reader's own sharding gives rank r the samples
[N*r/world, N*(r+1)/world) of that sequence, and a shuffle buffer mixes them (the writer also shuffles
samples across tars). Train: every rank runs `train_steps` steps and no sample repeats within an epoch
(the ragged tail of each rank's shard is dropped). Val: tars in order, padded and masked, each sample
counted once. `index` and `label` come from the tar.

Decode: the `mixed` decoder (nvJPEG; hardware JPEG decoder share `data.hw_decoder_load`; buffers
preallocated for ImageNet's largest image) when the training device is CUDA, else `cpu` (libjpeg-turbo)
with `device_id=None`. Train, one view: `fn.decoders.image_random_crop` decodes only the random crop
window (ROI decode), then resize. Two views: decode the whole image once, then two independent
`fn.random_resized_crop` (on the GPU after a mixed decode): one ROI decode cannot serve two windows and
decoding twice would double the dominant cost. Both use DALI's crop generator (area min_area..1,
aspect 3/4..4/3, 10 tries), then a random flip and `fn.crop_mirror_normalize` (mean/std scaled to
0..255) to float32 NCHW on the training device (channels_last is the trainer's). Val: resize the
shorter side to `val_resize` (the long side is rounded where torchvision truncates: a sub-pixel
difference on non-square images), centre crop `image_size`.

Index and label: the file reader's label is the dataset index; the class is looked up on the device
(`labels = class_of[index]`).

Resume: `set_epoch(epoch, start_step)` replays the epoch's order from `start_step` exactly. The
augmentation is seeded by (seed, epoch, rank), so a run resumed at an epoch boundary sees exactly the
crops and flips of an uninterrupted run (DALI's random draws do not depend on the thread count). A
resume in the middle of an epoch gets fresh draws for the rest of that epoch (DALI's random state
cannot be advanced without running the decoder), then exact again from the next epoch. Webdataset
cannot start mid-epoch: a mid-epoch resume runs the remaining number of steps on a freshly seeded
shuffle, so that one epoch's coverage is approximate.

Bad data: a file that cannot be read or decoded stops iteration at once with a RuntimeError naming
it (never a skip: that would change the epoch). DALI names the file for most decode failures;
otherwise the samples that may have been in flight (for webdataset: what the shuffle buffer may hold)
are decoded again one by one to find it. `launch/check_dataset.py` lists every bad file of a dataset.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from nvidia.dali import Pipeline, fn, types

from pipeline.data.dali.webdataset import COMPONENTS, Shards, list_shards, read_samples, read_shard_labels
from pipeline.data.folder import FolderListing, list_image_folder
from pipeline.data.sharding import train_indices, train_steps, val_indices

log = logging.getLogger(__name__)

PREFETCH = 2  # batches DALI prepares ahead of the one being consumed
SHUFFLE_BUFFER = 4096  # webdataset: samples the reader shuffles among
# nvJPEG buffer sizes for the largest image in ImageNet, so decoding never reallocates (NVIDIA's
# ResNet-50 examples use the same figures).
DEVICE_MEMORY_PADDING = 211025920
HOST_MEMORY_PADDING = 140544512
LARGEST_WIDTH, LARGEST_HEIGHT = 5980, 6430
ASPECT_RATIO = [3 / 4, 4 / 3]


def build_dali_loaders(cfg, root: Path, *, views: int, batch_size: int, image_size: int, val_resize: int,
                       min_area: float, mean, std, workers: int, seed: int, rank: int, world: int,
                       device: torch.device):
    """Train loader (`views` views per image) and val loader (one view), as `data.build_loaders` expects."""
    if val_resize < image_size:
        raise ValueError(f"data.val_resize ({val_resize}) must be at least data.image_size ({image_size})")
    train_src, val_src = _sources(cfg, Path(root))
    common = dict(batch_size=batch_size, image_size=image_size, val_resize=val_resize, min_area=min_area,
                  mean=mean, std=std, threads=max(1, workers), seed=seed, rank=rank, world=world, device=device,
                  hw_decoder_load=cfg.hw_decoder_load)
    log.info("DALI loaders: %s format, %s decode, %d threads", cfg.format,
             "GPU (mixed, nvJPEG)" if device.type == "cuda" else "CPU (libjpeg-turbo)", common["threads"])
    train = DaliLoader(train_src, train=True, views=views, **common)
    val = DaliLoader(val_src, train=False, views=1, **common)
    if train.num_classes != val.num_classes:
        raise ValueError(f"{root}: train has {train.num_classes} classes but val has {val.num_classes}")
    if len(train) == 0:
        raise ValueError(f"{root}: {train.num_samples} train images are fewer than one batch of {batch_size} "
                         f"per process on {world} processes; lower train.batch_size")
    return train, val


def _sources(cfg, root: Path) -> tuple[FolderListing | Shards, FolderListing | Shards]:
    if cfg.format == "folder":
        return list_image_folder(root / "train", cfg.per_class), list_image_folder(root / "val", cfg.val_per_class)
    if cfg.format == "filelist":
        return read_file_lists(root, cfg.per_class, cfg.val_per_class)
    if cfg.per_class or cfg.val_per_class:
        raise ValueError("data.per_class / data.val_per_class need format folder or filelist (shards are fixed)")
    return list_shards(root / "train"), list_shards(root / "val")


def read_file_lists(root: Path, per_class: int = 0, val_per_class: int = 0) -> tuple[FolderListing, FolderListing]:
    """`<root>/train.txt` and `<root>/val.txt` (`<path relative to root> <class>` per line) as listings.

    Classes are 0..max label over both lists; `per_class` keeps each class's first files, as for folders.
    """
    parsed = []
    for name, keep in (("train.txt", per_class), ("val.txt", val_per_class)):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"file list not found: {path} (lines: <path relative to {root}> <class>)")
        files, labels, seen = [], [], {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                file, label = line.rsplit(maxsplit=1)
                label = int(label)
            except ValueError:
                raise ValueError(f"{path}:{n}: expected '<path> <class>', got {line!r}") from None
            seen[label] = seen.get(label, 0) + 1
            if keep <= 0 or seen[label] <= keep:
                files.append(file)
                labels.append(label)
        if not files:
            raise ValueError(f"{path}: no samples")
        parsed.append((files, labels))
    classes = [str(c) for c in range(1 + max(max(labels) for _, labels in parsed))]
    train, val = (FolderListing(root, classes, files, labels) for files, labels in parsed)
    return train, val


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] & 0x7FFFFFFF)


class DaliLoader:
    """Yields dict batches like `TorchLoader`: views (list of B x 3 x H x W float32), labels, index, valid."""

    def __init__(self, source: FolderListing | Shards, *, train: bool, views: int, batch_size: int,
                 image_size: int, val_resize: int, min_area: float, mean, std, threads: int, seed: int,
                 rank: int, world: int, device: torch.device, hw_decoder_load: float = 0.65):
        self.source, self.train, self.views = source, train, views if train else 1
        self.batch_size, self.image_size, self.val_resize, self.min_area = batch_size, image_size, val_resize, min_area
        self.mean = [255 * m for m in mean]  # DALI normalises 0..255 pixels
        self.std = [255 * s for s in std]
        self.threads, self.seed, self.rank, self.world = threads, seed, rank, world
        self.device, self.hw_decoder_load = device, hw_decoder_load
        self.gpu = device.type == "cuda"
        self.epoch, self.start_step = 0, 0
        self.num_classes = source.num_classes
        self.shards = isinstance(source, Shards)
        if self.shards:
            self.num_samples = source.num_samples
        else:
            self.num_samples = len(source)
            self.paths = np.array([str(source.root / f) for f in source.files], dtype=object)
            self.class_of = torch.as_tensor(source.labels, dtype=torch.int64, device=device)

    # ---- the plan: which samples each step reads ----
    def _plan(self) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """(steps x B dataset indices or None for shards, steps x B validity or None, steps)."""
        n, b = self.num_samples, self.batch_size
        if self.train:
            if self.shards:
                return None, None, max(0, train_steps(n, b, self.world) - self.start_step)
            idx = train_indices(n, b, self.rank, self.world, self.seed, self.epoch)[self.start_step:]
            return idx, None, len(idx)
        idx, valid = val_indices(n, b, self.rank, self.world)
        if self.shards:  # DALI's reader shard: positions past its size are padding
            shard_size = n * (self.rank + 1) // self.world - n * self.rank // self.world
            valid = (np.arange(valid.size) < shard_size).reshape(valid.shape)
            return None, valid, len(valid)
        return idx, valid, len(idx)

    def sample_labels(self) -> torch.Tensor:
        """(num_samples,) int64: the class of every sample, by dataset index (shards: read from them)."""
        if self.shards:
            return torch.as_tensor(read_shard_labels(self.source), dtype=torch.int64)
        return torch.as_tensor(self.source.labels, dtype=torch.int64)

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Select the epoch's order; `start_step` skips the steps a resumed run already took."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        if self.train:  # without drawing the epoch's permutation
            return max(0, train_steps(self.num_samples, self.batch_size, self.world) - self.start_step)
        return len(val_indices(self.num_samples, self.batch_size, self.rank, self.world)[0])

    # ---- the DALI graph ----
    def _read(self, plan: np.ndarray | None):
        """(encoded images, dataset index, class or None) for this rank's epoch."""
        if plan is not None:
            order = plan.reshape(-1)
            encoded, index = fn.readers.file(files=self.paths[order].tolist(), labels=order.tolist(),
                                             random_shuffle=False, name="reader")
            return encoded, index, None
        tars, indexes = self._tar_order()
        encoded, index, label = fn.readers.webdataset(
            paths=[str(t) for t in tars], index_paths=[str(i) for i in indexes], ext=list(COMPONENTS),
            dtypes=[types.UINT8, types.INT64, types.INT64], missing_component_behavior="error",
            shard_id=self.rank, num_shards=self.world, random_shuffle=self.train, initial_fill=SHUFFLE_BUFFER,
            pad_last_batch=not self.train, name="reader")
        return encoded, index, label

    def _tar_order(self) -> tuple[list[Path], list[Path]]:
        """Webdataset tars and their indexes in this epoch's order; the same on every rank, so the
        reader's shards partition it."""
        tars, indexes = self.source.tars, self.source.indexes
        if self.train:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(tars))
            tars, indexes = [tars[i] for i in perm], [indexes[i] for i in perm]
        return tars, indexes

    def _decoder_args(self) -> dict:
        if not self.gpu:
            return dict(device="cpu", output_type=types.RGB)
        return dict(device="mixed", output_type=types.RGB, hw_decoder_load=self.hw_decoder_load,
                    device_memory_padding=DEVICE_MEMORY_PADDING, host_memory_padding=HOST_MEMORY_PADDING,
                    preallocate_width_hint=LARGEST_WIDTH, preallocate_height_hint=LARGEST_HEIGHT)

    def _normalize(self, images, mirror=None, crop=None):
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=self.mean,
                                        std=self.std, mirror=0 if mirror is None else mirror,
                                        **({"crop": (crop, crop)} if crop else {}))

    def _train_views(self, encoded) -> list:
        s, area = self.image_size, [self.min_area, 1.0]
        if self.views == 1:  # ROI decode: only the crop window is decoded
            images = fn.decoders.image_random_crop(encoded, random_area=area, random_aspect_ratio=ASPECT_RATIO,
                                                   **self._decoder_args())
            crops = [fn.resize(images, resize_x=s, resize_y=s)]
        else:  # decode once, crop each view from the same pixels
            images = fn.decoders.image(encoded, **self._decoder_args())
            crops = [fn.random_resized_crop(images, size=[s, s], random_area=area, random_aspect_ratio=ASPECT_RATIO)
                     for _ in range(self.views)]
        return [self._normalize(c, mirror=fn.random.coin_flip(probability=0.5)) for c in crops]

    def _val_view(self, encoded) -> list:
        images = fn.decoders.image(encoded, **self._decoder_args())
        images = fn.resize(images, resize_shorter=self.val_resize)
        return [self._normalize(images, crop=self.image_size)]

    def _build(self, plan: np.ndarray | None) -> Pipeline:
        seed = _seed(self.seed, self.epoch, self.rank, self.start_step) if self.train else 0
        device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if self.gpu else None
        pipe = Pipeline(batch_size=self.batch_size, num_threads=self.threads, device_id=device_id, seed=seed,
                        prefetch_queue_depth=PREFETCH)
        with pipe:
            encoded, index, label = self._read(plan)
            views = self._train_views(encoded) if self.train else self._val_view(encoded)
            pipe.set_outputs(*views, index, *([] if label is None else [label]))
        pipe.build()
        return pipe

    # ---- iteration ----
    def __iter__(self):
        plan, valid, steps = self._plan()
        if steps == 0:
            return
        pipe = self._build(plan)
        returned = []  # dataset indices handed out so far: on an error they are not suspects
        try:
            for step in range(steps):
                try:
                    outputs = pipe.run()
                except RuntimeError as e:
                    raise RuntimeError(self._explain(e, plan, step, returned)) from e
                batch = self._batch(outputs, valid, step)
                if self.shards:
                    returned += batch["index"].tolist()
                yield batch
        finally:
            del pipe  # frees DALI's threads and buffers now, not at garbage collection

    def _tensor(self, data) -> torch.Tensor:
        """A DALI output batch as a torch tensor of our own (DALI reuses its buffers)."""
        data = data.as_tensor()
        if not self.gpu:
            return torch.from_numpy(np.array(data))
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(data.shape(), dtype=torch.float32, device=self.device)
        feed_ndarray(data, out, cuda_stream=torch.cuda.current_stream(self.device))
        return out

    def _batch(self, outputs, valid, step) -> dict:
        views = [self._tensor(v) for v in outputs[:self.views]]
        index = torch.from_numpy(np.array(outputs[self.views].as_tensor()).reshape(-1).astype(np.int64)).to(self.device)
        if self.shards:
            labels = torch.from_numpy(np.array(outputs[self.views + 1].as_tensor()).reshape(-1)).to(self.device)
        else:
            labels = self.class_of[index]
        batch = {"views": views, "labels": labels, "index": index}
        if valid is not None:
            batch["valid"] = torch.from_numpy(valid[step]).to(self.device)
        return batch

    def _explain(self, error: RuntimeError, plan: np.ndarray | None, step: int, returned: list[int]) -> str:
        """An error message that names the bad file(s): DALI's when it names one, else found by
        re-decoding the samples that may have been in flight."""
        message = str(error)
        if plan is not None:
            suspects = list(dict.fromkeys(self.paths[plan[step:step + PREFETCH + 2].reshape(-1)].tolist()))
            named = [p for p in suspects if p in message]
            if not named:  # e.g. bytes that are no image at all: the codec does not say which sample
                named = [p for p, _ in find_undecodable(read_files(suspects), self.threads)]
        else:
            named = re.findall(r"\S+\.tar:\d+:\S+", message)  # DALI's `tar:offset:member`
            if not named:  # the rank's shard up to what the reader may have read, minus what it returned
                n, b = self.num_samples, self.batch_size
                start = n * self.rank // self.world
                size = n * (self.rank + 1) // self.world - start
                reach = (step + PREFETCH + 3) * b + (SHUFFLE_BUFFER if self.train else 0)
                done = set(returned)
                suspects = ((name, parts["jpg"]) for name, parts in
                            read_samples(*self._tar_order(), start, start + min(size, reach))
                            if int(np.frombuffer(parts["index"], dtype=np.int64)[0]) not in done)
                named = [p for p, _ in find_undecodable(suspects, self.threads)]
        where = ", ".join(named) or "not identified; `python launch/check_dataset.py ROOT` lists every bad file"
        split = "train" if self.train else "val"
        return (f"DALI {split} loader: cannot decode {where} (epoch {self.epoch}, step {self.start_step + step})"
                f"\n  {dali_reason(message)}")


def dali_reason(message: str) -> str:
    """The line of a DALI error that says what went wrong (after the operator's traceback)."""
    reason = message.split("encountered:")[-1].strip().splitlines()[0] if "encountered:" in message else message
    return re.sub(r"\s*sample #\d+ :\s*$", "", reason)  # external-source samples have no name to print


# ---- decode checks (used above and by launch/check_dataset.py) ----
def read_files(paths: Iterable[str]):
    """(path, bytes or the OSError raised reading it)."""
    for path in paths:
        try:
            yield str(path), Path(path).read_bytes()
        except OSError as e:
            yield str(path), e


def _check_pipeline(batch_size: int, threads: int) -> Pipeline:
    pipe = Pipeline(batch_size=batch_size, num_threads=threads, device_id=None, prefetch_queue_depth=1,
                    exec_async=False, exec_pipelined=False)  # synchronous: a failure belongs to the batch just fed
    with pipe:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        pipe.set_outputs(fn.decoders.image(encoded, device="cpu", output_type=types.RGB).shape())
    pipe.build()
    return pipe


def find_undecodable(items: Iterable[tuple[str, bytes | Exception]], threads: int = 2,
                     batch_size: int = 64) -> list[tuple[str, str]]:
    """(name, reason) for every item DALI's CPU decoder (the training decoder) cannot decode.

    Batches are decoded together; a failing batch is retried one sample at a time to name the culprits.
    """
    bad: list[tuple[str, str]] = []
    pipe = _check_pipeline(batch_size, threads)

    def check(batch):
        nonlocal pipe
        if not batch:
            return
        try:
            pipe.feed_input("encoded", [np.frombuffer(data, dtype=np.uint8) for _, data in batch])
            pipe.run()
            return
        except RuntimeError as e:  # the pipeline is dead after an error: make a new one
            pipe = _check_pipeline(batch_size, threads)
            if len(batch) == 1:
                bad.append((batch[0][0], dali_reason(str(e))))
                return
        for item in batch:
            check([item])

    batch = []
    for name, data in items:
        if isinstance(data, Exception):
            bad.append((name, f"cannot read: {data}"))
        elif len(data) == 0:
            bad.append((name, "empty file"))
        else:
            batch.append((name, data))
            if len(batch) == batch_size:
                check(batch)
                batch = []
    check(batch)
    return bad
