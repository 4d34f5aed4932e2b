"""pipeline/checkpoint.py with a one-process stand-in for accelerate (save_state writes what accelerate
writes): the folder names, the manifest, which checkpoints are kept and which resume picks, and every
failure leaving the previous checkpoint intact with a message that says so."""
from __future__ import annotations

import errno
import json
import os

import pytest

from pipeline import checkpoint as ck


class OneProcess:
    num_processes, process_index, is_main_process = 1, 0, True

    def __init__(self, fail=None):
        self.fail = fail

    def save_state(self, folder):
        if self.fail:
            raise self.fail
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "model.safetensors"), "wb") as f:
            f.write(b"w" * 37)
        with open(os.path.join(folder, "random_states_0.pkl"), "wb") as f:
            f.write(b"r" * 5)

    def wait_for_everyone(self):
        pass


def save(run, step, keep=3, **kw):
    return ck.save_checkpoint(OneProcess(**kw), run, {"global_step": step, "epoch": step // 10}, keep,
                              loader_state={"step": step})


def test_folder_names_manifest_and_state(tmp_path):
    final = save(tmp_path, 1234)
    assert final == tmp_path / "checkpoints" / "step-000001234" == ck.checkpoint_dir(tmp_path, 1234)
    manifest = json.loads((final / ck.COMPLETE).read_text())
    assert manifest["model.safetensors"] == 37 and manifest["random_states_0.pkl"] == 5
    assert manifest["loader_state_0.json"] == len(json.dumps({"step": 1234}))
    assert ck.read_trainer_state(final) == {"global_step": 1234, "epoch": 123}
    assert ck.read_loader_state(final, 0) == {"step": 1234} and ck.read_loader_state(final, 1) is None
    assert ck.is_complete(final)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001234"]  # no temporary left


def test_keep_the_newest_k_and_resume_from_the_newest_complete(tmp_path):
    for step in (5, 40, 300, 2000):  # numeric order = name order thanks to the zero padding
        save(tmp_path, step, keep=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000000300", "step-000002000"]
    newest = ck.checkpoint_dir(tmp_path, 2000)
    (newest / "model.safetensors").write_bytes(b"w" * 36)  # truncated by one byte
    assert not ck.is_complete(newest)
    assert ck.find_latest(tmp_path) == ck.checkpoint_dir(tmp_path, 300)
    assert ck.complete_checkpoints(tmp_path, warn=False) == [ck.checkpoint_dir(tmp_path, 300)]
    (ck.checkpoint_dir(tmp_path, 300) / ck.STATE_FILE).write_text("{not json")
    assert ck.find_latest(tmp_path) is None


def test_prune_keeps_exactly_the_newest_k(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step, keep=0)
    ck.prune(tmp_path, keep=1)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000000003"]


def test_prune_removes_damaged_older_ones_keeps_a_damaged_newer_one(tmp_path, caplog):
    for step in (1, 2, 3):
        save(tmp_path, step, keep=0)  # 0: keep all
    assert len(ck.list_checkpoints(tmp_path)) == 3
    (ck.checkpoint_dir(tmp_path, 1) / ck.COMPLETE).unlink()  # damaged, older than a complete one
    (ck.checkpoint_dir(tmp_path, 3) / ck.COMPLETE).unlink()  # damaged, newest: a save in progress elsewhere
    ck.prune(tmp_path, keep=1)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000000002", "step-000000003"]
    assert [r.getMessage() for r in caplog.records if "removing damaged" in r.getMessage()] == [
        f"removing damaged checkpoint {ck.checkpoint_dir(tmp_path, 1)}: step-000000002 is newer and complete"]


def test_the_same_step_saved_again_replaces_it(tmp_path):
    save(tmp_path, 7)
    (ck.checkpoint_dir(tmp_path, 7) / "stale.txt").write_text("from the first save")
    save(tmp_path, 7)
    assert not (ck.checkpoint_dir(tmp_path, 7) / "stale.txt").exists() and ck.is_complete(ck.checkpoint_dir(tmp_path, 7))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000000007"]


@pytest.mark.parametrize("code,hint", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EIO, False)])
def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, code, hint):
    save(tmp_path, 10)
    with pytest.raises(ck.CheckpointWriteError) as e:
        save(tmp_path, 20, fail=OSError(code, os.strerror(code)))
    message = str(e.value)
    assert f"the previous checkpoint {ck.checkpoint_dir(tmp_path, 10)} is intact" in message
    assert "step-000000020" in message and "process 0" in message
    assert ("is full" in message) is hint
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000010"]  # the partial write removed
    with pytest.raises(ck.CheckpointWriteError, match="there is no earlier checkpoint"):
        save(tmp_path / "fresh", 1, fail=OSError(errno.EIO, "I/O error"))


def test_debris_and_atomic_small_files(tmp_path):
    (tmp_path / "checkpoints" / f"{ck.TMP_PREFIX}step-000000009").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000000004").mkdir()  # an incomplete folder is listed, never complete
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000000004"]
    ck.remove_debris(tmp_path)
    assert not (tmp_path / "checkpoints" / f"{ck.TMP_PREFIX}step-000000009").exists()
    ck.remove_debris(tmp_path / "no run here")  # nothing to do, no error
    target = tmp_path / "summary.json"
    ck.write_text_atomically(target, "one")
    ck.write_text_atomically(target, "two")
    assert target.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "summary.json"]
    assert ck.any_process(OneProcess(), True) is True and ck.any_process(OneProcess(), 0) is False


def cannot_remove(monkeypatch, prefix):
    """Folders whose name starts with `prefix` cannot be removed, as on NFS while a file in them is still
    open somewhere (its silly-renamed `.nfsXXXX` stays): rmtree empties them, then fails on the folder."""
    real = os.rmdir

    def rmdir(path, *args, **kwargs):
        if os.path.basename(os.fspath(path)).startswith(prefix):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), os.fspath(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "rmdir", rmdir)


def test_a_folder_that_cannot_be_removed_never_fails_a_save_nor_hides_why_one_failed(tmp_path, monkeypatch):
    save(tmp_path, 5, keep=1)
    (tmp_path / "checkpoints" / f"{ck.TMP_PREFIX}step-000000004").mkdir()  # debris of a killed save
    cannot_remove(monkeypatch, ck.TMP_PREFIX)
    save(tmp_path, 5, keep=1)  # the same step again: the old copy, moved aside, cannot be removed
    save(tmp_path, 6, keep=1)  # the debris cannot be removed either
    assert ck.is_complete(ck.checkpoint_dir(tmp_path, 6))
    cannot_remove(monkeypatch, "step-")
    save(tmp_path, 7, keep=1)  # pruning step 6 fails: the new checkpoint still counts
    assert ck.find_latest(tmp_path) == ck.checkpoint_dir(tmp_path, 7)
    # a failed write whose partial folder cannot be removed still says what failed, and what is safe
    with pytest.raises(ck.CheckpointWriteError, match=r"No space left.*checkpoint .*step-000000007 is intact"):
        save(tmp_path, 8, fail=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    monkeypatch.setattr(ck, "_fsync_tree", lambda path: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(ck.CheckpointWriteError, match=r"OSError: \[Errno 5\] I/O error.*step-000000007 is intact"):
        save(tmp_path, 9)


def test_every_file_and_the_folders_are_synced_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    final = save(tmp_path, 3)
    tmp = str(final.parent / f"{ck.TMP_PREFIX}{final.name}")
    files = sorted(p.name for p in final.iterdir())
    assert files == sorted([ck.COMPLETE, ck.STATE_FILE, "loader_state_0.json", "model.safetensors",
                            "random_states_0.pkl"])
    assert sorted(synced[:-2]) == sorted(f"{tmp}/{name}" for name in files)  # under the temporary name
    assert synced[-2:] == [tmp, str(final.parent)]  # then the folder, and after the rename its parent


def test_the_damaged_checkpoint_warning_names_the_newest_complete_one(tmp_path, caplog):
    for step in (1, 2, 3):
        save(tmp_path, step, keep=0)
    (ck.checkpoint_dir(tmp_path, 1) / ck.COMPLETE).unlink()
    ck.prune(tmp_path, keep=0)  # 0 keeps every complete one; the damaged older one still goes
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000000002", "step-000000003"]
    assert f"removing damaged checkpoint {ck.checkpoint_dir(tmp_path, 1)}: step-000000003 is newer" in caplog.text
