"""NVIDIA DALI loaders: the same batches, sample plans and indices as the torchvision loader, decoded by DALI.

Readers (`data.format`):
  folder      the shared listing (`folder.list_image_folder`), so sample i is the same file for both
              backends and CRD.
  filelist    `<root>/train.txt` and `<root>/val.txt`, lines `<path relative to root> <class>`; read the
              same way as folder.
  webdataset  tar shards + DALI index files read by `fn.readers.webdataset` (layout: data/webdataset.py).

Sample order (folder/filelist): an external source hands DALI each step's file names and indices from
`sharding.train_indices` / `val_indices` (the torchvision loader's plans; exact by construction: same
ranks, same steps, ragged batch dropped, validation padded and masked); `fn.io.file.read` reads the
files in DALI's C++ threads. So ONE pipeline per split serves the whole run: no rebuild per epoch or
per evaluation (on a GPU each build re-allocates nvJPEG's buffers, and freeing pinned memory waits on
the whole device). The train feed ends at the epoch's last step (`limit_steps`: the trainer's
`train.steps_per_epoch`), and a stream left unfinished is run out before the next one starts.

Webdataset keeps sequential tar reads, so it cannot follow an arbitrary per-sample plan: the tars are
visited in a seeded per-epoch order, the reader's own sharding gives rank r the samples
[N*r/world, N*(r+1)/world) of that sequence, and a shuffle buffer mixes them (the writer also shuffles
samples across tars). Train: every rank runs `train_steps` steps and no sample repeats within an epoch
(the ragged tail of each rank's shard is dropped); the reader's tar order is fixed when it is built, so
the train pipeline is built once per epoch. Val: tars in order, padded and masked, each sample counted
once; one pipeline per run (the reader's padded epoch is exactly one evaluation; it is rebuilt only on
a rank whose shard needs fewer steps than the others). `index` and `label` come from the tar.

Decode: the `mixed` decoder (nvJPEG; hardware JPEG decoder share `data.hw_decoder_load`; buffers
preallocated for ImageNet's largest image) when the training device is CUDA, else `cpu` (libjpeg-turbo)
with `device_id=None`. Train, one view: `fn.decoders.image_random_crop` decodes only the random crop
window (ROI decode), then resize. Two views: decode the whole image once, then two independent
`fn.random_resized_crop` (on the GPU after a mixed decode): one ROI decode cannot serve two windows and
decoding twice would double the dominant cost. Both use DALI's crop generator (area min_area..1,
aspect 3/4..4/3, 10 tries), then a random flip and `fn.crop_mirror_normalize` (mean/std scaled to
0..255) to float32. Val: resize the shorter side to `val_resize` (the long side is rounded where
torchvision truncates: a sub-pixel difference on non-square images), centre crop `image_size`.

The batch: `images` is ONE (views * B, 3, H, W) tensor, view-major. On CUDA DALI emits HWC and each
view is copied (`feed_ndarray`, on the current stream) straight into its slice of one NHWC tensor,
returned as its NCHW permute: channels_last memory with no further copy, no `torch.cat`. On CPU it is
CHW, contiguous. `index` (and webdataset's `label`) are pipeline outputs moved to the GPU inside DALI;
the class of a file-reader sample is looked up on the device (`class_of[index]`); val's `valid` mask
is computed on the device from the step (positions past this rank's share are padding). No pageable
host->device copy, no read of a device tensor.

Resume (exact): `state_dict()` holds DALI's own checkpoint (`enable_checkpointing`: the state of every
random generator and of the webdataset reader as of the last batch consumed: DALI accounts for the
batches it prefetched), the epoch, the batches consumed and, for the file readers, the steps already
handed to DALI. The trainer saves it per process inside each checkpoint (`loader_state_<rank>.json`)
and `load_state_dict` restores it: the pipeline is rebuilt from the DALI checkpoint and the feed
re-hands the steps that were in flight, so a resumed run yields, bit for bit, the batches of the
uninterrupted one from any step (tests/data/test_dali_resume.py; DALI's draws do not depend on the
thread count). Without a state (a checkpoint written by the torchvision loader), or with one saved by
a different pipeline (format, sizes, seed, rank/world, decode device, DALI version: the differences are
named), the sample order is still replayed but the draws are not, and the resume says so loudly
("RESUME NOT EXACT"). The webdataset train pipeline is seeded by (seed, epoch, rank), so its epoch
boundaries are exact even without a state.

Bad data: a file that cannot be read or decoded stops iteration at once with a RuntimeError naming
it (never a skip: that would change the epoch). DALI names the file for most decode failures;
otherwise the samples that may have been in flight (for webdataset: what the shuffle buffer may hold)
are decoded again one by one to find it. `launch/check_dataset.py` lists every bad file of a dataset.
"""
from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import nvidia.dali
import torch
from nvidia.dali import Pipeline, fn, types

from pipeline.data import dataset_sources
from pipeline.data.filelist import read_file_lists  # noqa: F401  (moved; kept importable from here)
from pipeline.data.folder import FolderListing
from pipeline.data.sharding import train_indices, train_steps, val_indices
from pipeline.data.webdataset import COMPONENTS, Shards, read_samples
from pipeline.errors import BadInputError

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
    train_src, val_src = dataset_sources(cfg, Path(root))
    common = dict(batch_size=batch_size, image_size=image_size, val_resize=val_resize, min_area=min_area,
                  mean=mean, std=std, threads=max(1, workers), seed=seed, rank=rank, world=world, device=device,
                  hw_decoder_load=cfg.hw_decoder_load)
    log.info("DALI loaders: %s format, %s decode, %d threads", cfg.format,
             "GPU (mixed, nvJPEG)" if device.type == "cuda" else "CPU (libjpeg-turbo)", common["threads"])
    train = DaliLoader(train_src, train=True, views=views, **common)
    val = DaliLoader(val_src, train=False, views=1, **common)
    if train.num_classes != val.num_classes:
        raise BadInputError(f"{root}: train has {train.num_classes} classes but val has {val.num_classes}")
    if len(train) == 0:
        raise BadInputError(f"{root}: {train.num_samples} train images are fewer than one batch of {batch_size} "
                            f"per process on {world} processes; lower train.batch_size")
    return train, val


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] & 0x7FFFFFFF)


class _FileFeed:
    """The external source of the file readers: each call returns the next step's (encoded paths, indices)
    of the current plan, and ends the stream (StopIteration) at `limit`. `fed` counts steps handed to DALI,
    which runs up to PREFETCH of them ahead of the consumer."""

    def __init__(self, paths: np.ndarray):
        self.paths = paths
        self.plan: np.ndarray = np.zeros((0, 0), dtype=np.int64)
        self.fed = self.limit = 0

    def __call__(self, batch_info):  # a one-argument callable: the form DALI's checkpointing accepts
        if self.fed >= self.limit:
            raise StopIteration
        index = np.ascontiguousarray(self.plan[self.fed], dtype=np.int64)
        self.fed += 1
        return [np.frombuffer(p.encode(), dtype=np.uint8) for p in self.paths[index].tolist()], index


class DaliLoader:
    """Yields dict batches: images ((views * B) x 3 x H x W float32, view-major; channels_last on CUDA),
    labels, index, and valid (val). See the module docstring for the design."""

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
        self.max_steps: int | None = None  # train: the trainer's steps per epoch, when it takes fewer
        self.num_classes = source.num_classes
        self.shards = isinstance(source, Shards)
        self._pipe: Pipeline | None = None
        self._pipe_epoch: int | None = None  # webdataset: the epoch the pipeline reads
        self._consumed = 0  # outputs taken from the pipeline in its current stream / epoch
        self._restore: dict | None = None  # a loaded state, applied when the pipeline is built
        self._arange = torch.arange(batch_size, device=device)  # validity masks are computed on the device
        if self.shards:
            self.num_samples = source.num_samples
            n, b = self.num_samples, batch_size
            self.shard_size = n * (rank + 1) // world - n * rank // world  # DALI's reader shard
            self._returned = np.zeros(n, dtype=bool)  # for error messages: samples already handed out
        else:
            self.num_samples = len(source)
            self.paths = np.array([str(source.root / f) for f in source.files], dtype=object)
            self.class_of = torch.as_tensor(source.labels, dtype=torch.int64, device=device)
            self._feed = _FileFeed(self.paths)
            self._stream: tuple[int, int] | None = None  # (epoch, plan steps) the feed serves
            self._started = False  # the pipeline ran since its last reset: a stream is open

    # ---- the plan: which samples each step reads ----
    def _plan(self, epoch: int) -> np.ndarray:
        """steps x B dataset indices (file readers), the whole epoch."""
        if self.train:
            plan = train_indices(self.num_samples, self.batch_size, self.rank, self.world, self.seed, epoch)
            return plan[:self._steps()]
        return val_indices(self.num_samples, self.batch_size, self.rank, self.world)[0]

    def _steps(self) -> int:
        if self.train:  # without drawing the epoch's permutation
            steps = train_steps(self.num_samples, self.batch_size, self.world)
            return steps if self.max_steps is None else min(steps, self.max_steps)
        return len(val_indices(self.num_samples, self.batch_size, self.rank, self.world)[0])

    def limit_steps(self, steps: int):
        """Train epochs of at most `steps` steps (`train.steps_per_epoch`): DALI is never handed a step the
        trainer will not take, so the random state at each epoch's end is the same in every run."""
        self.max_steps = steps

    def sample_labels(self) -> torch.Tensor:
        """(num_samples,) int64: the class of every sample, by dataset index (CRD's negative sampler)."""
        return torch.as_tensor(self.source.sample_labels())

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Select the epoch's order; `start_step` skips the steps a resumed run already took."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return max(0, self._steps() - self.start_step)

    # ---- the DALI graph ----
    def _read(self):
        """(encoded images, dataset index, class or None)."""
        if not self.shards:
            names, index = fn.external_source(source=self._feed, num_outputs=2, batch=True, batch_info=True,
                                              dtype=[types.UINT8, types.INT64])
            return fn.io.file.read(names), index, None
        tars, indexes = self._tar_order(self.epoch)
        encoded, index, label = fn.readers.webdataset(
            paths=[str(t) for t in tars], index_paths=[str(i) for i in indexes], ext=list(COMPONENTS),
            dtypes=[types.UINT8, types.INT64, types.INT64], missing_component_behavior="error",
            shard_id=self.rank, num_shards=self.world, random_shuffle=self.train, initial_fill=SHUFFLE_BUFFER,
            pad_last_batch=not self.train, name="reader")
        return encoded, index, label

    def _tar_order(self, epoch: int) -> tuple[list[Path], list[Path]]:
        """Webdataset tars and their indexes in this epoch's order; the same on every rank, so the
        reader's shards partition it."""
        tars, indexes = self.source.tars, self.source.indexes
        if self.train:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(tars))
            tars, indexes = [tars[i] for i in perm], [indexes[i] for i in perm]
        return tars, indexes

    def _decoder_args(self) -> dict:
        if not self.gpu:
            return dict(device="cpu", output_type=types.RGB)
        return dict(device="mixed", output_type=types.RGB, hw_decoder_load=self.hw_decoder_load,
                    device_memory_padding=DEVICE_MEMORY_PADDING, host_memory_padding=HOST_MEMORY_PADDING,
                    preallocate_width_hint=LARGEST_WIDTH, preallocate_height_hint=LARGEST_HEIGHT)

    def _normalize(self, images, mirror=None, crop=None):
        # HWC on the GPU: the batch tensor is NHWC memory, i.e. channels_last NCHW by a free permute
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC" if self.gpu else "CHW",
                                        mean=self.mean, std=self.std, mirror=0 if mirror is None else mirror,
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

    def _build(self, checkpoint: bytes | None = None) -> Pipeline:
        if self.shards:  # one pipeline per epoch: the tar order and the seed change
            seed = _seed(self.seed, self.epoch, self.rank) if self.train else 0
        else:  # one pipeline per run: the feed changes the order, the random state runs on
            seed = _seed(self.seed, self.rank) if self.train else 0
        device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if self.gpu else None
        pipe = Pipeline(batch_size=self.batch_size, num_threads=self.threads, device_id=device_id, seed=seed,
                        prefetch_queue_depth=PREFETCH, enable_checkpointing=self.train, checkpoint=checkpoint)
        with pipe:
            encoded, index, label = self._read()
            views = self._train_views(encoded) if self.train else self._val_view(encoded)
            extra = [index]
            if self.gpu:  # index and class reach the device with the images, on DALI's stream
                extra = [index.gpu()] + ([label.gpu()] if label is not None else []) + ([index] if self.shards else [])
            elif label is not None:
                extra.append(label)
            pipe.set_outputs(*views, *extra)
        pipe.build()
        return pipe

    # ---- the stream of batches (file readers): one pipeline per run ----
    def _open_stream(self, epoch: int, plan: np.ndarray, start: int):
        """Point the feed at `plan` from `start`, first finishing the previous stream: every step handed
        to DALI is run to its end (and discarded), so the random state depends only on the steps fed,
        never on where a consumer stopped reading."""
        if self._pipe is None:
            self._pipe = self._build(self._take_restore(epoch, start))
        if self._stream == (epoch, start) and self._consumed == start:
            self._feed.limit = len(plan)  # the open stream (or the restored one) goes on from here
            return
        if self._started or self._feed.fed > self._consumed:
            self._feed.limit = self._feed.fed  # no new steps: run out what DALI was given
            while True:
                try:
                    self._pipe.run()
                except StopIteration:
                    break
            self._pipe.reset()
            self._started = False
        self._feed.plan, self._feed.fed, self._feed.limit = plan, start, len(plan)
        self._stream, self._consumed = (epoch, start), start

    def _take_restore(self, epoch: int, start: int) -> bytes | None:
        """The DALI checkpoint of a loaded state, and the feed where the saved run had left it."""
        state, self._restore = self._restore, None
        if state is None:
            return None
        if not self.shards:  # steps fed before the save but not consumed are re-fed, then run out or used
            self._feed.plan = self._plan(state["epoch"])
            self._feed.fed, self._feed.limit = state["consumed"], state["fed"]
            self._stream, self._consumed = (state["epoch"], state["consumed"]), state["consumed"]
            self._started = False
        return base64.b64decode(state["dali"])

    # ---- iteration ----
    def __iter__(self):
        steps = self._steps()
        if self.start_step >= steps:
            return
        if self.shards:
            yield from self._iter_shards(steps)
            return
        plan = self._plan(self.epoch)
        self._open_stream(self.epoch, plan, self.start_step)
        for step in range(self.start_step, steps):
            try:
                outputs = self._run()
            except StopIteration:  # cannot happen: the feed holds the epoch's remaining steps
                raise RuntimeError(f"DALI loader: the pipeline ended at step {step} of {steps}") from None
            except RuntimeError as e:
                raise RuntimeError(self._explain(e, plan, step)) from e
            self._started = True
            self._consumed = step + 1
            yield self._batch(outputs, step)

    def _iter_shards(self, steps: int):
        start = self.start_step
        if self.train:  # a pipeline per epoch, from a checkpoint when resuming inside one
            checkpoint = None
            state, self._restore = self._restore, None
            if state is not None and (state["epoch"], state["consumed"]) == (self.epoch, start):
                checkpoint = base64.b64decode(state["dali"])
            elif start:
                warn_inexact(f"no loader state for webdataset epoch {self.epoch + 1}, step {start}: the rest of "
                             "this epoch reads a freshly shuffled stream (other samples, other crops and flips) "
                             "instead of the uninterrupted run's")
            self._pipe = None  # free the previous epoch's pipeline before building the next
            self._pipe, self._pipe_epoch, self._consumed = self._build(checkpoint), self.epoch, start
            self._returned[:] = False
        elif self._pipe is None or self._consumed % -(-self.shard_size // self.batch_size):
            # val: the reader's epoch is this rank's shard, padded to whole batches; a pipeline that is
            # not at the start of one (a rank whose shard needs fewer steps than the others) is rebuilt
            self._pipe = None
            self._pipe, self._consumed = self._build(), 0
        if not self.train:
            self._returned[:] = False
        for step in range(start, steps):
            try:
                outputs = self._run()
            except RuntimeError as e:
                raise RuntimeError(self._explain(e, None, step)) from e
            self._consumed += 1
            yield self._batch(outputs, step)

    def _run(self):
        """The next batch's DALI outputs. On CUDA they are handed over on the current stream (stream-ordered:
        the host does not wait for DALI's GPU work; DALI's default executor frees them in stream order)."""
        if self.gpu:
            return self._pipe.run(torch.cuda.current_stream(self.device))
        return self._pipe.run()

    # ---- loader state: saved in every checkpoint, one per process ----
    def _fingerprint(self) -> dict:
        """What the saved pipeline must share with this one for its DALI checkpoint to apply."""
        return {"format": "webdataset" if self.shards else "files", "num_samples": self.num_samples,
                "batch_size": self.batch_size, "views": self.views, "image_size": self.image_size,
                "min_area": self.min_area, "max_steps": self.max_steps, "seed": self.seed, "rank": self.rank,
                "world": self.world, "decode": "mixed" if self.gpu else "cpu", "dali_version": nvidia.dali.__version__}

    def state_dict(self) -> dict:
        """Where the pipeline is: epoch, outputs consumed, steps handed to DALI, DALI's own checkpoint
        (its random generators and reader, as of the last output consumed)."""
        if self._restore is not None:  # loaded, not yet applied: it still says where the run is
            return dict(self._restore)
        state = {**self._fingerprint(), "epoch": self.epoch, "consumed": self._consumed, "fed": self._consumed,
                 "dali": None}
        if self.shards:
            state["epoch"] = self._pipe_epoch if self._pipe_epoch is not None else self.epoch
        elif self._stream is not None:
            state.update(epoch=self._stream[0], fed=self._feed.fed)
        if self._pipe is not None:
            state["dali"] = base64.b64encode(_as_bytes(self._pipe.checkpoint())).decode("ascii")
        return state

    def load_state_dict(self, state: dict | None, where: str = "the checkpoint"):
        """Resume exactly where `state` was saved; say loudly, naming what differs, when it cannot be."""
        self._restore = None
        if state is None:
            warn_inexact(f"{where} holds no DALI loader state for process {self.rank}: the sample order is "
                         "replayed, but crops and flips (and, for webdataset, the shuffle) will differ from the "
                         "uninterrupted run")
            return
        expected = self._fingerprint()
        differs = [f"{k} {state.get(k)!r} -> {v!r}" for k, v in expected.items() if state.get(k) != v]
        if differs:
            warn_inexact(f"the DALI loader state in {where} was saved by another pipeline ({', '.join(differs)}): "
                         "the sample order is replayed, but crops and flips (and, for webdataset, the shuffle) "
                         "will differ from the uninterrupted run")
            return
        if self._pipe is not None:  # restoring needs a fresh pipeline
            self._pipe = None
            if not self.shards:
                self._stream, self._started, self._feed.fed, self._feed.limit = None, False, 0, 0
        # no DALI checkpoint: saved before the pipeline was first built, so a fresh one is that state
        self._restore = state if state["dali"] else None

    # ---- batches ----
    def _batch(self, outputs, step: int) -> dict:
        b, s = self.batch_size, self.image_size
        if self.gpu:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            stream = torch.cuda.current_stream(self.device)
            images = torch.empty((self.views * b, s, s, 3), dtype=torch.float32, device=self.device)
            for v in range(self.views):  # each view's DALI output straight into its slice: no cat
                feed_ndarray(outputs[v].as_tensor(), images[v * b:(v + 1) * b], cuda_stream=stream)
            images = images.permute(0, 3, 1, 2)  # (views*B, 3, H, W), channels_last memory
            index = torch.empty(b, dtype=torch.int64, device=self.device)
            data = outputs[self.views].as_tensor()
            feed_ndarray(data, index.view(data.shape()), cuda_stream=stream)
            labels = None
            if self.shards:
                labels = torch.empty(b, dtype=torch.int64, device=self.device)
                data = outputs[self.views + 1].as_tensor()
                feed_ndarray(data, labels.view(data.shape()), cuda_stream=stream)
                host_index = outputs[self.views + 2]
        else:
            images = torch.empty((self.views * b, 3, s, s), dtype=torch.float32)
            for v in range(self.views):
                images[v * b:(v + 1) * b].copy_(torch.from_numpy(np.asarray(outputs[v].as_tensor())))
            host_index = outputs[self.views]
            index = torch.from_numpy(np.array(host_index.as_tensor()).reshape(-1).astype(np.int64))
            labels = None
            if self.shards:
                labels = torch.from_numpy(np.array(outputs[self.views + 1].as_tensor()).reshape(-1).astype(np.int64))
        if self.shards:
            self._returned[np.asarray(host_index.as_tensor()).reshape(-1)] = True  # host memory: no wait
        else:
            labels = self.class_of[index]
        batch = {"images": images, "labels": labels, "index": index}
        if not self.train:  # padding: positions past this rank's share (computed on the device)
            if self.shards:
                batch["valid"] = step * b + self._arange < self.shard_size
            else:  # val_indices: rank r reads global positions r, r + world, ...
                batch["valid"] = self.rank + self.world * (step * b + self._arange) < self.num_samples
        return batch

    def _explain(self, error: RuntimeError, plan: np.ndarray | None, step: int) -> str:
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
                reach = (step + PREFETCH + 3) * b + (SHUFFLE_BUFFER if self.train else 0)
                suspects = ((name, parts["jpg"]) for name, parts in
                            read_samples(*self._tar_order(self.epoch), start, start + min(self.shard_size, reach))
                            if not self._returned[int(np.frombuffer(parts["index"], dtype=np.int64)[0])])
                named = [p for p, _ in find_undecodable(suspects, self.threads)]
        where = ", ".join(named) or "not identified; `python launch/check_dataset.py ROOT` lists every bad file"
        split = "train" if self.train else "val"
        return (f"DALI {split} loader: cannot decode {where} (epoch {self.epoch}, step {step})"
                f"\n  {dali_reason(message)}")


def _as_bytes(checkpoint) -> bytes:
    return checkpoint if isinstance(checkpoint, bytes) else checkpoint.encode("latin-1")


def warn_inexact(what: str):
    log.warning("RESUME NOT EXACT: %s", what)


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
