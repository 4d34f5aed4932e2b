"""Atomic checkpoints in `<run>/checkpoints/step-NNNNNNNNN/`, the last K kept; resume finds the newest complete one.

A checkpoint is written into a temporary folder by every process (accelerate's `save_state`: model
with every method's state, optimizer, registered scheduler, per-process RNG states), then rank 0
writes `trainer_state.json`, fsyncs every file, marks it COMPLETE and renames the folder into place.
A crash or a full disk half-way leaves only a temporary folder; the previous checkpoint is intact.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"


def _fsync_tree(path: Path):
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_dir(run_dir: Path, global_step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{global_step:09d}"


def save_checkpoint(accelerator, run_dir: Path, trainer_state: dict, keep: int) -> Path:
    """Collective: every process calls it. Returns the final folder."""
    final = checkpoint_dir(run_dir, trainer_state["global_step"])
    tmp = final.parent / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # debris of an earlier failed attempt at this step
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    failed = False
    try:
        accelerator.save_state(str(tmp))
    except Exception:
        failed = True
        raise
    finally:
        # Every process reaches this barrier, so a failed write cannot leave the others hanging.
        accelerator.wait_for_everyone()
        if failed and accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
    if accelerator.is_main_process:
        try:
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=1))
            sizes = {str(f.relative_to(tmp)): f.stat().st_size for f in tmp.rglob("*") if f.is_file()}
            (tmp / COMPLETE).write_text(json.dumps(sizes, indent=1))  # a manifest: truncation is detectable
            _fsync_tree(tmp)
            if final.exists():  # the same step saved again (e.g. a resumed run's first checkpoint)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        prune(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def is_complete(path: Path) -> bool:
    """The COMPLETE manifest is there and every file it lists has its recorded size."""
    try:
        sizes = json.loads((path / COMPLETE).read_text())
        json.loads((path / STATE_FILE).read_text())
        return all((path / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first (temporary folders excluded)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def find_latest(run_dir: Path) -> Path | None:
    """Newest complete checkpoint; an incomplete or corrupt newer one is skipped with a warning."""
    for path in reversed(list_checkpoints(run_dir)):
        if is_complete(path):
            return path
        log.warning("skipping incomplete or corrupt checkpoint %s; trying the one before it", path)
    return None


def read_trainer_state(path: Path) -> dict:
    return json.loads((path / STATE_FILE).read_text())


def prune(run_dir: Path, keep: int):
    complete = [p for p in list_checkpoints(run_dir) if is_complete(p)]
    for path in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
