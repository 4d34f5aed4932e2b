"""A run that trains from a teacher cache (`--teacher.cache PATH`): the check, the reader, the teacher.

  check_for_run(cfg, train_source, views)  the manifest against this run (preflight and the Trainer call it
                                           before anything trains): one-line errors naming both sides
  open_for_run(cfg, train_loader, views)   the check, then the reader attached to the train loader
  cached_teacher(batch, use)               the teacher's outputs rebuilt from a batch's records, on the device

The run's teacher identity is computed as the cache pass computes it (identity.py): the teacher built
once on the CPU from its config (timm arch, weights, input statistics) and its state dict hashed, then
dropped. Hashing the checkpoint file's tensors without building the network would not be the same
identity: a file with wrapper prefixes, other dtypes or timm hub weights loads into the same network
from other bytes. The build is what preflight already does to check the file (a ResNet-50: about a
second); it is remembered per process, so preflight and the Trainer build it once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Config
from pipeline.teacher_cache.identity import data_identity, notes, teacher_identity
from pipeline.teacher_cache.loader_hooks import attach_cache, decoder, train_listing
from pipeline.teacher_cache.manifest import Manifest, load_manifest
from pipeline.teacher_cache.match import check_run

log = logging.getLogger(__name__)

DECODER = "loader decoder"  # a manifest note: what decoded the images the teacher saw


@dataclass
class CacheUse:
    """What a run reads from its cache: the manifest, and the temperatures its methods ask for."""
    root: Path
    manifest: Manifest
    temperatures: list[float]
    warnings: list[str] = field(default_factory=list)

    @property
    def teacher_val(self) -> dict | None:
        return self.manifest.teacher_val


_TEACHER_IDENTITIES: dict[tuple, dict] = {}


def _weights_key(cfg: Config, num_classes: int) -> tuple:
    t = cfg.teacher
    stat = os.stat(t.checkpoint) if t.checkpoint and os.path.isfile(t.checkpoint) else None
    return (t.arch, t.checkpoint, stat and (stat.st_size, stat.st_mtime_ns), t.pretrained, tuple(t.mean),
            tuple(t.std), tuple(cfg.data.mean), tuple(cfg.data.std), num_classes)


def run_teacher_identity(cfg: Config, num_classes: int) -> dict:
    """identity.teacher_identity of the teacher `cfg` names, built on the CPU once per process (per file
    version) and dropped."""
    import torch

    from pipeline.models import create_network

    key = _weights_key(cfg, num_classes)
    if key not in _TEACHER_IDENTITIES:
        with torch.random.fork_rng(devices=[]):  # as the Trainer builds a teacher: the global RNG is untouched
            network = create_network(cfg.teacher, num_classes, cfg.data.mean, cfg.data.std)
        _TEACHER_IDENTITIES[key] = teacher_identity(cfg, network)
    return _TEACHER_IDENTITIES[key]


def check_for_run(cfg: Config, train_source, views: int) -> CacheUse:
    """The cache `teacher.cache` against a run of `cfg` with `views` views per sample over `train_source`
    (a listing or a train loader): raises a one-line BadInputError (or MissingInputError) naming both
    sides, else returns what the run reads, with the warnings of terms the cache only approximates."""
    from pipeline.methods import teacher_needs

    root = Path(cfg.teacher.cache)
    manifest = load_manifest(root)
    names, labels, num_classes = train_listing(train_source)
    made_from = {**run_teacher_identity(cfg, num_classes), **data_identity(cfg, names, labels, num_classes)}
    needs = teacher_needs(cfg.method, cfg)
    warnings = check_run(str(root), manifest, made_from, needs, views=views, epochs=cfg.train.epochs,
                         method=cfg.method, notes=notes(cfg))
    return CacheUse(root, manifest, sorted({float(t) for t in needs.temperatures.values()}), warnings)


def open_for_run(cfg: Config, train_loader, views: int) -> CacheUse:
    """check_for_run, then every batch of `train_loader` carries its samples' records (logged warnings:
    approximate terms, and images decoded by another decoder than the one the teacher saw)."""
    from pipeline.teacher_cache.reader import CacheReader

    use = check_for_run(cfg, train_loader, views)
    made_with = use.manifest.notes.get(DECODER)
    if made_with and made_with != decoder(train_loader):
        use.warnings.append(f"teacher cache {use.root} was made from images decoded by {made_with}, this run decodes "
                            f"with {decoder(train_loader)}: the same crop windows and flips, pixels that differ by "
                            "the decoders' rounding")
    for warning in use.warnings:
        log.warning(warning)
    attach_cache(train_loader, CacheReader(use.root, use.manifest))
    record = use.manifest.record
    log.info("teacher from the cache %s (top %d of %d classes%s, %s view(s), %d epochs): no teacher forward",
             use.root, record.topk, record.num_classes, ", features" if record.feature_dim else "", record.views,
             use.manifest.epochs)
    return use


def cached_teacher(batch: dict, use: CacheUse):
    """The teacher's outputs on this batch's views (a rebuild.CachedTeacher), from the records it carries:
    elementwise device work of fixed shapes, no host sync (callable inside a compiled region)."""
    from pipeline.teacher_cache.rebuild import rebuild

    record = use.manifest.record
    return rebuild(batch, record.num_classes, record.temperatures, use.temperatures)
