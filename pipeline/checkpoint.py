"""Atomic checkpoints in `<run>/checkpoints/step-NNNNNNNNN/`, the last K kept; resume finds the newest complete one.

A checkpoint is written into a temporary folder by every process (accelerate's `save_state`: model
with every method's state, optimizer, registered scheduler, per-process RNG states), then rank 0
writes `trainer_state.json`, fsyncs every file, marks it COMPLETE and renames the folder into place.
A crash or a full disk half-way leaves only a temporary folder (removed by the next save, never
counted as a checkpoint); the previous checkpoint is intact. Resume takes the newest complete one and
falls back to the one before it when a file is truncated or fails to load.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from pipeline.durable import fsync_dir

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
RNG_FILE = "random_states"  # accelerate writes random_states_<process>.pkl, one per process
LOADER_FILE = "loader_state"  # loader_state_<process>.json: where each process's train loader is (DALI)
TMP_PREFIX = ".tmp-"


def _fsync_tree(path: Path):
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(path)


def checkpoint_dir(run_dir: Path, global_step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{global_step:09d}"


def any_process(accelerator, flag: bool) -> bool:
    """Collective OR: True on every process if it is True on any, so all take the same branch."""
    if accelerator.num_processes == 1:
        return bool(flag)
    t = torch.tensor(float(flag), device=accelerator.device)
    return bool(accelerator.reduce(t, "max").item())


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, I/O error); earlier checkpoints are untouched."""


def _write_failed(accelerator, run_dir: Path, final: Path, error: Exception | None):
    """Raise on every process (collectively decided), saying what happened and what is still safe."""
    previous = find_latest(run_dir)
    kept = f"the previous checkpoint {previous} is intact" if previous else "there is no earlier checkpoint"
    cause = f"{type(error).__name__}: {error}" if error is not None else "it failed on another process"
    hint = ""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = (f" The disk holding {run_dir} is full: free space or lower train.keep_checkpoints"
                " before resuming with --resume auto.")
    raise CheckpointWriteError(f"writing checkpoint {final} failed on process {accelerator.process_index} "
                               f"({cause}); the partial write was removed and {kept}.{hint}") from error


def save_checkpoint(accelerator, run_dir: Path, trainer_state: dict, keep: int,
                    loader_state: dict | None = None) -> Path:
    """Collective: every process calls it. Returns the final folder. `loader_state` (this process's train
    loader position, given on every process or on none) is written next to its RNG state.

    Every failure is agreed on by all processes before anyone raises, so a rank that hits a full disk
    cannot leave the others waiting at a barrier until the distributed timeout.
    """
    final = checkpoint_dir(run_dir, trainer_state["global_step"])
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"
    error = None
    if accelerator.is_main_process:
        try:
            remove_debris(run_dir)  # of earlier failed or killed attempts
            tmp.mkdir(parents=True)
        except OSError as e:
            error = e
    if any_process(accelerator, error is not None):
        _write_failed(accelerator, run_dir, final, error)
    try:
        accelerator.save_state(str(tmp))
        if loader_state is not None:
            (tmp / f"{LOADER_FILE}_{accelerator.process_index}.json").write_text(json.dumps(loader_state))
    except Exception as e:
        error = e
    if any_process(accelerator, error is not None):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        _write_failed(accelerator, run_dir, final, error)
    if accelerator.is_main_process:
        try:
            # Each process wrote its own RNG state; rank 0 must see them all, or the checkpoint is unusable.
            files = [RNG_FILE + "_{}.pkl"] + ([LOADER_FILE + "_{}.json"] if loader_state is not None else [])
            missing = [f.format(r) for f in files for r in range(accelerator.num_processes)
                       if not (tmp / f.format(r)).is_file()]
            if missing:
                raise FileNotFoundError(f"{', '.join(missing)} not visible from process 0: train.output_dir must "
                                        "be on a filesystem shared by all nodes")
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=1))
            sizes = {str(f.relative_to(tmp)): f.stat().st_size for f in tmp.rglob("*") if f.is_file()}
            (tmp / COMPLETE).write_text(json.dumps(sizes, indent=1))  # a manifest: truncation is detectable
            _fsync_tree(tmp)
            _replace_dir(tmp, final)
        except Exception as e:
            error = e
            shutil.rmtree(tmp, ignore_errors=True)
    if any_process(accelerator, error is not None):
        _write_failed(accelerator, run_dir, final, error)
    if accelerator.is_main_process:
        prune(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def _replace_dir(tmp: Path, final: Path):
    """Move the finished folder into place. The same step saved again (e.g. after falling back from a
    damaged newer checkpoint) replaces the old folder, which is first moved out of the `step-` names."""
    old = None
    if final.exists():
        old = final.parent / f"{TMP_PREFIX}old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomically(path: Path, text: str):
    """A small file (a run's summary, a results table) replaced whole: a reader or a crash never sees half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def remove_debris(run_dir: Path):
    """Delete temporary folders left by a failed or killed save (never counted as checkpoints)."""
    root = run_dir / "checkpoints"
    for path in root.glob(f"{TMP_PREFIX}*") if root.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


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


def complete_checkpoints(run_dir: Path, warn: bool = True) -> list[Path]:
    """Complete checkpoints, newest first; each incomplete or truncated one is skipped with a warning."""
    found = []
    for path in reversed(list_checkpoints(run_dir)):
        if is_complete(path):
            found.append(path)
        elif warn:
            log.warning("skipping incomplete checkpoint %s (no readable %s manifest or %s, or a file is missing "
                        "or truncated); trying the one before it", path, COMPLETE, STATE_FILE)
    return found


def find_latest(run_dir: Path) -> Path | None:
    """Newest complete checkpoint; an incomplete or corrupt newer one is skipped with a warning."""
    found = complete_checkpoints(run_dir)
    return found[0] if found else None


def read_trainer_state(path: Path) -> dict:
    return json.loads((path / STATE_FILE).read_text())


def read_loader_state(path: Path, process: int) -> dict | None:
    """This process's saved train loader state; None when the checkpoint has none (another loader wrote it)."""
    file = path / f"{LOADER_FILE}_{process}.json"
    return json.loads(file.read_text()) if file.is_file() else None


def prune(run_dir: Path, keep: int):
    """Keep the newest `keep` complete checkpoints (0: all). A damaged checkpoint older than the newest
    complete one can never be resumed from (resume only reads complete ones): it goes too, with a warning,
    so that a run taking faults by the dozen does not fill its disk with them."""
    folders = list_checkpoints(run_dir)
    complete = [p for p in folders if is_complete(p)]
    doomed = complete[:-keep] if keep > 0 else []
    if complete:
        damaged = [p for p in folders if p < complete[-1] and p not in complete]
        for path in damaged:
            log.warning("removing damaged checkpoint %s: %s is newer and complete", path, complete[-1].name)
        doomed += damaged
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
