"""NVIDIA DALI loaders: the same batches, sample plans, indices and crop windows as the torchvision loader,
decoded by DALI.

    feed.py           the external source: each step of the plan (sharding.py) with its crop windows and
                      flips (views.py) and attached extras, for every format
    graph.py          the DALI graph: ROI decode (one view) or decode once and cut two windows, resize,
                      flip, normalise; validation; nvJPEG memory
    loader.py         DaliLoader: one pipeline per loader and run, iteration, batches on the device
    decode_errors.py  naming the file that does not decode; `find_undecodable` for launch/check_dataset.py
    webdataset.py     the shard writer (`python -m pipeline.data.dali SRC DST`)

Readers (`data.format`), all through the one plan-driven external source:
  folder      the shared listing (`folder.list_image_folder`), so sample i is the same file for both
              backends and CRD; files read by `fn.io.file.read` in DALI's threads.
  filelist    `<root>/train.txt` and `<root>/val.txt`, lines `<path relative to root> <class>`; read the
              same way as folder.
  webdataset  tar shards + DALI index files (layout: data/webdataset.py), read by byte offsets from the
              memory-mapped tars: the sample table (sample_table.py) says where each dataset index is.
              Not DALI's sequential `fn.readers.webdataset`: replayable views need each sample's index
              and image size before it is decoded, and a plan-driven reader gives exact validation
              sharding and one pipeline per run. The trade: tar reads are page faults in the feeding
              (Python) thread, each step's images are handed to the kernel's readahead one step early,
              and reads are random within the tars instead of sequential; the tars keep what matters on
              cluster file systems (few large files, no per-image metadata operations).

Sample order: the same plans as the torchvision loader (exact by construction: same ranks, same steps,
ragged batch dropped, validation padded and masked); one pipeline per split and run, never rebuilt per
epoch or evaluation (on a GPU each build re-allocates nvJPEG's buffers, and freeing pinned memory waits
on the whole device). The train feed ends at the epoch's last step (`limit_steps`).

Resume: DALI draws no random numbers (crop windows and flips come from views.py), so the batches of an
(epoch, step) are the same in every run: `set_epoch(epoch, start_step)` is the whole restore.
`state_dict()` records the position and the settings that decide the batches (planned.py); a resume
with other settings says "RESUME NOT EXACT" naming them.

Bad data: a file that cannot be read or decoded stops iteration at once with a RuntimeError naming it
(decode_errors.py; never a skip: that would change the epoch). Train images whose header cannot be read
are refused when the loader is built. `launch/check_dataset.py` lists every bad file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.data import dataset_sources
from pipeline.data.dali.decode_errors import dali_reason, find_undecodable, read_files  # noqa: F401
from pipeline.data.dali.loader import DaliLoader
from pipeline.errors import BadInputError

log = logging.getLogger(__name__)


def build_dali_loaders(cfg, root: Path, *, views: int, batch_size: int, image_size: int, val_resize: int,
                       min_area: float, mean, std, workers: int, seed: int, rank: int, world: int,
                       device: torch.device, aug_seed: int | None = None, train_plan: str = "train"):
    """Train loader (`views` views per image) and val loader (one view), as `data.build_loaders` expects."""
    if val_resize < image_size:
        raise ValueError(f"data.val_resize ({val_resize}) must be at least data.image_size ({image_size})")
    train_src, val_src = dataset_sources(cfg, Path(root))
    common = dict(batch_size=batch_size, image_size=image_size, val_resize=val_resize, min_area=min_area,
                  mean=mean, std=std, threads=max(1, workers), seed=seed, aug_seed=aug_seed, rank=rank,
                  world=world, device=device, hw_decoder_load=cfg.hw_decoder_load)
    log.info("DALI loaders: %s format, %s decode, %d threads", cfg.format,
             "GPU (mixed, nvJPEG)" if device.type == "cuda" else "CPU (libjpeg-turbo)", common["threads"])
    train = DaliLoader(train_src, train=True, views=views, **common)
    train.set_plan(train_plan)
    val = DaliLoader(val_src, train=False, views=1, **common)
    if train.num_classes != val.num_classes:
        raise BadInputError(f"{root}: train has {train.num_classes} classes but val has {val.num_classes}")
    if len(train) == 0:
        raise BadInputError(f"{root}: {train.num_samples} train images are fewer than one batch of {batch_size} "
                            f"per process on {world} processes; lower train.batch_size")
    return train, val
