"""DaliLoader: iteration over one plan-driven DALI pipeline per loader and run (feed.py, graph.py).

Each epoch (or evaluation) points the feed at the plan from the start step; a stream left unfinished
(a consumer that stopped early) is run out and the pipeline reset first, so the outputs DALI prefetched
for it are never handed to the next one. DALI draws no random numbers, so nothing about the pipeline's
history matters: the batches of (plan, epoch, step) are the same in any run.
"""
from __future__ import annotations

import logging
import weakref

import numpy as np
import torch
from nvidia.dali import Pipeline

from pipeline.data.dali.decode_errors import explain, read_files
from pipeline.data.dali.feed import Feed, encoded, extra_args, rand_augment_args, window_args
from pipeline.data.dali.graph import PREFETCH, GraphSpec, build_pipeline
from pipeline.data.folder import FolderListing
from pipeline.data.planned import PlannedLoader
from pipeline.data.webdataset import Shards

log = logging.getLogger(__name__)


class DaliLoader(PlannedLoader):
    """Yields dict batches: images ((views * B) x 3 x H x W float32, view-major; channels_last on CUDA),
    labels, index, valid (padded plans) and attached extras. See the package docstring."""

    def __init__(self, source: FolderListing | Shards, *, train: bool, views: int, batch_size: int,
                 image_size: int, val_resize: int, min_area: float, mean, std, threads: int, seed: int,
                 rank: int, world: int, device: torch.device, hw_decoder_load: float = 0.65,
                 aug_seed: int | None = None, roi_decode: bool | None = None):
        super().__init__(source, train=train, views=views, batch_size=batch_size, image_size=image_size,
                         min_area=min_area, seed=seed, aug_seed=aug_seed, rank=rank, world=world, device=device)
        self.gpu = device.type == "cuda"
        self.decoder = "dali-mixed" if self.gpu else "dali-cpu"
        self.val_resize, self.threads, self.hw_decoder_load = val_resize, threads, hw_decoder_load
        self.mean = [255 * m for m in mean]  # DALI normalises 0..255 pixels
        self.std = [255 * s for s in std]
        # ROI decode serves one view; `roi_decode=False` decodes the whole image then (bench/loaders.py)
        self.roi_decode = self.train and self.views == 1 and roi_decode is not False
        self.shards = isinstance(source, Shards)
        self.paths = None if self.shards else np.array([str(source.root / f) for f in source.files], dtype=object)
        self.class_of = torch.as_tensor(self.table.labels, dtype=torch.int64, device=device)
        loader = weakref.ref(self)  # no cycle through the pipeline: a dropped loader frees it (and its threads) at once
        self.feed = Feed(lambda index, epoch: loader()._step_outputs(index, epoch))
        self._pipe: Pipeline | None = None
        self._dirty = False  # the pipeline ran or was fed since its last reset: a stream is open

    # ---- what the feed hands for a step ----
    def _step_outputs(self, index: np.ndarray, epoch: int) -> list[np.ndarray]:
        position = self.table.position[index]
        out = [encoded(self.source, position, self.paths), index]
        if self.train:
            out += window_args(self.view_params(index, epoch), self.roi_decode)
            if self.rand_augment is not None:
                out += rand_augment_args(self.rand_augment_params(index, epoch))
        if self.extras_keys:
            out += extra_args(self.extras(index, epoch), self.extras_keys, self.views)
        if self.shards and self.feed.fed < self.feed.limit:  # the tars: start reading the next step's images
            self.source.will_need(self.table.position[self.feed.plan[self.feed.fed]])
        return out

    def attach_extras(self, fn):
        super().attach_extras(fn)
        self._pipe, self._dirty = None, False  # the extras (and RandAugment, via set_augment) are in the graph

    def _build(self) -> Pipeline:
        device_id = None
        if self.gpu:
            device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        spec = GraphSpec(train=self.train, views=self.views, roi_decode=self.roi_decode, files=not self.shards,
                         extras=len(self.extras_keys) * self.views, batch_size=self.batch_size,
                         image_size=self.image_size, val_resize=self.val_resize, mean=self.mean, std=self.std,
                         threads=self.threads, device_id=device_id, hw_decoder_load=self.hw_decoder_load,
                         rand_augment=(self.rand_augment.num_ops, self.rand_augment.magnitude)
                         if self.rand_augment else None)
        return build_pipeline(spec, self.feed)

    # ---- iteration ----
    def _open_stream(self, plan: np.ndarray, start: int):
        """Point the feed at `plan` from step `start`, first running out and resetting an open stream."""
        if self._pipe is None:
            self._pipe = self._build()
        elif self._dirty:
            self.feed.limit = self.feed.fed  # no new steps: run out what DALI was given
            while True:
                try:
                    self._pipe.run()
                except StopIteration:
                    break
            self._pipe.reset()
        self.feed.point(plan, self.epoch, start)
        self._dirty = True

    def __iter__(self):
        steps = self.steps()
        if self.start_step >= steps:
            return
        plan = self.epoch_plan()[0]
        self._open_stream(plan, self.start_step)
        padded = self.padded()
        for step in range(self.start_step, steps):
            try:
                outputs = self._run()
            except StopIteration:  # cannot happen: the feed holds the epoch's remaining steps
                raise RuntimeError(f"DALI loader: the pipeline ended at step {step} of {steps}") from None
            except RuntimeError as e:
                raise RuntimeError(self._explain(e, plan, step)) from e
            batch = self._batch(outputs)
            if padded:
                batch["valid"] = self.valid(step)
            self.position = (self.epoch, step + 1)
            yield batch

    def _run(self):
        """The next batch's DALI outputs. On CUDA they are handed over on the current stream (stream-ordered:
        the host does not wait for DALI's GPU work; DALI's default executor frees them in stream order)."""
        if self.gpu:
            return self._pipe.run(torch.cuda.current_stream(self.device))
        return self._pipe.run()

    def _explain(self, error: RuntimeError, plan: np.ndarray, step: int) -> str:
        """The samples that may have been in flight: this step and those DALI prefetched after it."""
        positions = list(dict.fromkeys(self.table.position[plan[step:step + PREFETCH + 2].reshape(-1)].tolist()))
        if self.shards:
            suspects = ((self.source.describe(p), self.source.member(p).tobytes()) for p in positions)
        else:
            suspects = read_files(self.paths[positions].tolist())  # a file that cannot be read is named too
        return explain(error, suspects, self.threads, "train" if self.train else "val", self.epoch, step)

    # ---- batches ----
    def _batch(self, outputs) -> dict:
        """Images view-major in one tensor (each view's output copied straight into its slice: no cat),
        index and extras; labels looked up on the device. No pageable host->device copy, no host wait."""
        b, s, views = self.batch_size, self.image_size, self.views
        index = self._tensor(outputs[views]).reshape(b)
        if self.gpu:
            images = torch.empty((views * b, s, s, 3), dtype=torch.float32, device=self.device)
            for v in range(views):
                self._copy(outputs[v], images[v * b:(v + 1) * b])
            images = images.permute(0, 3, 1, 2)  # (views*B, 3, H, W), channels_last memory
        else:
            images = torch.empty((views * b, 3, s, s), dtype=torch.float32)
            for v in range(views):
                self._copy(outputs[v], images[v * b:(v + 1) * b])
        batch = {"images": images, "labels": self.class_of[index], "index": index}
        first = views + 1
        for k, key in enumerate(self.extras_keys):
            parts = [outputs[first + k * views + v] for v in range(views)]
            data = parts[0].as_tensor()
            batch[key] = torch.empty((views * b, *data.shape()[1:]), dtype=_torch_dtype(data), device=self.device)
            for v, part in enumerate(parts):
                self._copy(part, batch[key][v * b:(v + 1) * b])
        return batch

    def _copy(self, output, into: torch.Tensor):
        """A DALI output (B samples of one shape) into a contiguous slice of a batch tensor."""
        if self.gpu:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            data = output.as_tensor()
            feed_ndarray(data, into.view(data.shape()), cuda_stream=torch.cuda.current_stream(self.device))
        else:
            into.view(-1).copy_(torch.from_numpy(np.asarray(output.as_tensor())).view(-1))

    def _tensor(self, output) -> torch.Tensor:
        """A DALI output as a new tensor on the device."""
        data = output.as_tensor()
        tensor = torch.empty(data.shape(), dtype=_torch_dtype(data), device=self.device)
        self._copy(output, tensor)
        return tensor


def _torch_dtype(data) -> torch.dtype:
    from nvidia.dali.plugin.pytorch import to_torch_type

    return to_torch_type[data.dtype]
