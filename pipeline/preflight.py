"""Every input a run names, checked before any training starts.

A run may train for minutes before the distillation itself is built (the demo's teacher, the student
alone for `train.baseline`); a wrong teacher checkpoint, dataset, resume path or an output folder that
cannot be written must stop it at once, with the one-line error the Trainer would give later. Every
process runs the same checks, so every process stops (none waits at a collective for the others).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import timm

from pipeline import checkpoint
from pipeline.baseline import baseline_cache_path
from pipeline.config import Config, ModelConfig
from pipeline.data import dataset_root, dataset_sources
from pipeline.errors import BadInputError, MissingInputError
from pipeline.methods import METHODS, parse_method
from pipeline.models import load_weights
from pipeline.teacher_cache.use import check_for_run


def check_inputs(cfg: Config, needs_teacher: bool, processes: int, resume: str = "") -> None:
    """Raises a UserError naming the first bad input."""
    train_source = dataset_sources(cfg.data, dataset_root(cfg.data))[0]
    num_classes = train_source.num_classes
    if cfg.student.checkpoint:
        check_weights("student", cfg.student, num_classes)
    if needs_teacher:
        check_teacher(cfg.teacher, num_classes, cached=bool(cfg.teacher.cache))
    if needs_teacher and cfg.teacher.cache:
        check_for_run(cfg, train_source, max(METHODS[n].views for n in parse_method(cfg.method)))
    check_writable(Path(cfg.train.output_dir), "train.output_dir")
    if cfg.train.baseline and needs_teacher:
        check_writable(baseline_cache_path(cfg, processes).parent, "the folder of the student-alone result's cache")
    if resume not in ("", "auto") and not checkpoint.is_complete(Path(resume)):
        raise MissingInputError(f"--resume {resume}: not a complete checkpoint (no {checkpoint.COMPLETE} manifest, "
                                "or a file is missing or truncated)")


def check_teacher(teacher: ModelConfig, num_classes: int, cached: bool = False) -> None:
    """`cached`: the run reads the teacher's outputs from teacher.cache, which is checked against these
    weights, so they must exist (a teacher still to be trained cannot have made the cache)."""
    if teacher.pretrained and not teacher.checkpoint:
        return  # timm's hub weights: fetched (and checked) by timm itself
    if not teacher.checkpoint:
        raise BadInputError("the method needs a teacher: set teacher.checkpoint (a local .safetensors or state "
                            "dict) or teacher.pretrained, or set teacher.train_if_missing to train one first")
    path = Path(teacher.checkpoint)
    if path.is_file():
        check_weights("teacher", teacher, num_classes)
    elif cached:
        raise MissingInputError(f"checkpoint not found: {path} (teacher.checkpoint): a run from teacher.cache "
                                f"{teacher.cache} checks that the cache was made by these weights")
    elif teacher.train_if_missing:  # it will be trained and cached there
        check_writable(path.parent, "the folder of teacher.checkpoint (where the trained teacher is cached)")
    else:
        raise MissingInputError(f"checkpoint not found: {path} (check teacher.checkpoint, or set "
                                "teacher.train_if_missing to train the teacher first)")


def check_weights(role: str, model: ModelConfig, num_classes: int) -> None:
    """The file loads into `model.arch` with the data's class count (errors name the file and the mismatch)."""
    try:
        network = timm.create_model(model.arch, num_classes=num_classes)
    except RuntimeError as e:
        raise BadInputError(f"{role}.arch: unknown timm architecture '{model.arch}' (see timm.list_models())") from e
    load_weights(network, model.checkpoint)


def check_writable(folder: Path, what: str) -> None:
    """The folder exists or can be made, and a file can be written in it (a read-only mount, a full quota)."""
    probe = folder / f".write-test-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        os.unlink(probe)
    except OSError as e:
        raise BadInputError(f"{what} {folder} cannot be written: {e.strerror or e}") from None
