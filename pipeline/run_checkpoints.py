"""What a run saves and where it resumes from, on top of the atomic checkpoint folders of pipeline/checkpoint.py.

A checkpoint holds accelerate's state (the trained module with every method's state, the optimizer, the
registered scheduler, each process's RNG state), each process's train-loader position (DALI) and the
run's progress (`trainer_state.json`: epoch, step in the epoch, global step, skipped steps, evaluation
history, method, process count). `--resume auto` takes the newest complete checkpoint and falls back to
older ones when one fails to load on any process; a checkpoint of another --method is an error, never
a fallback.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from accelerate.utils import load as load_pickle

from pipeline import checkpoint
from pipeline.errors import BadInputError, MissingInputError

log = logging.getLogger(__name__)

PROGRESS = ("epoch", "step_in_epoch", "global_step", "skipped_steps", "history")


class ResumeMismatchError(BadInputError):
    """The checkpoint belongs to another experiment (e.g. another --method): never fall back silently."""


class RunCheckpoints:
    def __init__(self, accelerator, run_dir: Path, method: str, keep: int, optimizer, train_loader,
                 before_save: Callable[[], None]):
        self.accelerator, self.run_dir, self.method, self.keep = accelerator, run_dir, method, keep
        self.optimizer, self.train_loader, self.before_save = optimizer, train_loader, before_save
        self.last_saved: tuple | None = None  # (global_step, epoch, step_in_epoch) of the newest checkpoint

    def save(self, progress: dict):
        """Collective. `progress`: the PROGRESS keys; the same progress twice is written once (e.g. a stop
        right after a periodic checkpoint)."""
        key = (progress["global_step"], progress["epoch"], progress["step_in_epoch"])
        if key == self.last_saved:
            return
        self.before_save()
        loader_state = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        state = {**progress, "method": self.method, "world_size": self.accelerator.num_processes}
        path = checkpoint.save_checkpoint(self.accelerator, self.run_dir, state, self.keep, loader_state)
        self.last_saved = key
        log.info("checkpoint %s", path)

    def resume(self, resume: str) -> dict | None:
        """'auto': the newest complete checkpoint of the run, falling back to older ones when one fails to
        load (a truncated file is skipped with a warning, garbage content fails here); or an explicit path.
        Returns the progress to continue from, or None when 'auto' finds nothing (a fresh start)."""
        if resume == "auto":
            candidates = checkpoint.complete_checkpoints(self.run_dir)
            if not candidates:
                log.info("--resume auto: no complete checkpoint in %s, starting fresh", self.run_dir / "checkpoints")
                return None
        else:
            candidates = [Path(resume)]
            if not checkpoint.is_complete(candidates[0]):
                raise MissingInputError(f"--resume {resume}: not a complete checkpoint (no {checkpoint.COMPLETE} "
                                        "manifest, or a file is missing or truncated)")
        for path in candidates:
            error = None
            try:
                state = self.load(path)
            except ResumeMismatchError:
                raise
            except Exception as e:
                error = e
            # Collective: a file that fails on one rank only (its RNG state) must move every rank back.
            if not checkpoint.any_process(self.accelerator, error is not None):
                break
            cause = f"{type(error).__name__}: {error}" if error is not None else "it failed on another process"
            if resume != "auto" or path == candidates[-1]:
                older = "; no older complete checkpoint to fall back to" if resume == "auto" else ""
                raise RuntimeError(f"cannot load checkpoint {path} ({cause}){older}") from error
            log.warning("cannot load checkpoint %s (%s); falling back to the one before it", path, cause)
        progress = {k: state[k] for k in PROGRESS}
        self.last_saved = (progress["global_step"], progress["epoch"], progress["step_in_epoch"])
        log.info("resumed from %s at epoch %d, step %d of the epoch", path, progress["epoch"] + 1,
                 progress["step_in_epoch"])
        return progress

    def load(self, path: Path) -> dict:
        state = checkpoint.read_trainer_state(path)
        if state["method"] != self.method:
            raise ResumeMismatchError(f"{path} was written by --method {state['method']}, not {self.method}")
        rank = self.accelerator.process_index
        rng = path / f"{checkpoint.RNG_FILE}_{rank}.pkl"
        if rng.is_file():
            load_pickle(rng)  # accelerate ignores an unreadable RNG state; a damaged one must fail here instead
        else:
            log.warning("%s has no RNG state for process %d (written by %s processes, now %d): continuing, "
                        "but not bit-exactly", path, rank, state.get("world_size", "?"), self.accelerator.num_processes)
        self.accelerator.load_state(str(path))
        if hasattr(self.train_loader, "load_state_dict"):  # DALI: its pipeline's state, to continue exactly
            self.train_loader.load_state_dict(checkpoint.read_loader_state(path, rank), where=str(path))
        for group in self.optimizer.param_groups:  # a checkpoint from before the fused optimizer says False
            group["fused"] = True
        return state
