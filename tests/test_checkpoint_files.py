"""pipeline/checkpoint.py on hand-made folders with a stand-in accelerator: cheap (no training run), and
each rule checked on its own: the manifest, newest-first order, pruning, debris, the atomic save."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import checkpoint


class Accelerator:
    """One process; save_state writes a model file and this process's RNG state, as accelerate does."""
    num_processes, process_index, is_main_process = 1, 0, True

    def __init__(self, fail=False):
        self.fail = fail

    def save_state(self, path):
        Path(path, "model.safetensors").write_bytes(b"m" * 123)
        if self.fail:
            raise OSError(28, "No space left on device")
        Path(path, f"{checkpoint.RNG_FILE}_0.pkl").write_bytes(b"r" * 7)

    def wait_for_everyone(self):
        pass


def save(run_dir, step, keep=3, fail=False):
    state = {"global_step": step, "epoch": step // 10, "step_in_epoch": step % 10, "method": "kd"}
    return checkpoint.save_checkpoint(Accelerator(fail), run_dir, state, keep)


def test_save_writes_a_complete_checkpoint_with_a_size_manifest(tmp_path):
    path = save(tmp_path, 12)
    assert path == tmp_path / "checkpoints" / "step-000000012"
    assert checkpoint.read_trainer_state(path) == {"global_step": 12, "epoch": 1, "step_in_epoch": 2, "method": "kd"}
    manifest = json.loads((path / checkpoint.COMPLETE).read_text())
    assert manifest["model.safetensors"] == 123 and manifest[f"{checkpoint.RNG_FILE}_0.pkl"] == 7
    assert manifest[checkpoint.STATE_FILE] == (path / checkpoint.STATE_FILE).stat().st_size
    assert checkpoint.is_complete(path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000012"]  # no temporary folder left


@pytest.mark.parametrize("damage", ["truncate", "grow", "delete", "no manifest", "bad manifest", "no state"])
def test_is_complete_rejects_every_damage(tmp_path, damage):
    path = save(tmp_path, 3)
    model = path / "model.safetensors"
    {"truncate": lambda: model.write_bytes(b"m" * 100),
     "grow": lambda: model.write_bytes(b"m" * 124),
     "delete": model.unlink,
     "no manifest": (path / checkpoint.COMPLETE).unlink,
     "bad manifest": lambda: (path / checkpoint.COMPLETE).write_text("{not json"),
     "no state": (path / checkpoint.STATE_FILE).unlink}[damage]()
    assert not checkpoint.is_complete(path)
    assert checkpoint.find_latest(tmp_path) is None


def test_newest_complete_first_and_pruning_keeps_the_last_k_complete(tmp_path):
    for step in (2, 4, 6, 8):
        save(tmp_path, step, keep=0)  # keep 0: keep everything
    assert [p.name[-2:] for p in checkpoint.list_checkpoints(tmp_path)] == ["02", "04", "06", "08"]
    (checkpoint.checkpoint_dir(tmp_path, 8) / "model.safetensors").write_bytes(b"")  # the newest is damaged
    assert checkpoint.find_latest(tmp_path) == checkpoint.checkpoint_dir(tmp_path, 6)
    assert [p.name[-2:] for p in checkpoint.complete_checkpoints(tmp_path)] == ["06", "04", "02"]
    save(tmp_path, 10, keep=2)  # prune counts complete checkpoints only: 6 and 10 stay, 2 and 4 go, and
    names = [p.name[-2:] for p in checkpoint.list_checkpoints(tmp_path)]  # the damaged 8, older than 10, goes
    assert names == ["06", "10"]
    # steps sort numerically even past a power of ten (zero-padded names)
    save(tmp_path, 100, keep=2)
    assert checkpoint.find_latest(tmp_path) == checkpoint.checkpoint_dir(tmp_path, 100)


def test_a_damaged_checkpoint_newer_than_every_complete_one_is_kept(tmp_path):
    for step in (2, 4):
        save(tmp_path, step, keep=0)
    (checkpoint.checkpoint_dir(tmp_path, 4) / "model.safetensors").write_bytes(b"")  # newer than 2, the newest good
    checkpoint.prune(tmp_path, keep=1)
    assert [p.name[-2:] for p in checkpoint.list_checkpoints(tmp_path)] == ["02", "04"]


def test_debris_is_not_a_checkpoint_and_the_next_save_removes_it(tmp_path):
    save(tmp_path, 5)
    debris = tmp_path / "checkpoints" / f"{checkpoint.TMP_PREFIX}step-000000009"
    debris.mkdir()
    (debris / checkpoint.COMPLETE).write_text("{}")
    assert checkpoint.list_checkpoints(tmp_path) == [checkpoint.checkpoint_dir(tmp_path, 5)]
    save(tmp_path, 6)
    assert not debris.exists()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000000005", "step-000000006"]


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_debris(tmp_path):
    save(tmp_path, 5)
    with pytest.raises(checkpoint.CheckpointWriteError, match="step-000000006.*previous checkpoint .*step-000000005"):
        save(tmp_path, 6, fail=True)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000005"]
    assert checkpoint.find_latest(tmp_path) == checkpoint.checkpoint_dir(tmp_path, 5)


def test_saving_the_same_step_again_replaces_it(tmp_path):
    first = save(tmp_path, 7)
    (first / "stale").write_text("from the first save")
    second = save(tmp_path, 7)
    assert second == first and checkpoint.is_complete(second) and not (second / "stale").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000007"]


def test_any_process_on_one_process_is_the_flag():
    assert checkpoint.any_process(Accelerator(), True) is True
    assert checkpoint.any_process(Accelerator(), False) is False
