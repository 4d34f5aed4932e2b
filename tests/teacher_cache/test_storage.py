"""Shard writing: offsets, atomic finish, resume after a kill at a chosen batch, damage detection."""
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cache_fixtures import batch_records, make_manifest, plan, write_cache
from pipeline.errors import BadInputError, MissingInputError
from pipeline.teacher_cache.manifest import read_manifest, write_manifest
from pipeline.teacher_cache.storage import ShardWriter, begin, finish, open_shard, verify_shard

REPO = Path(__file__).resolve().parents[2]


def test_each_record_lands_at_its_offset(tmp_path):
    """Row i // world of shard i % world, views in order: read back by raw byte offsets, not by the reader."""
    m = write_cache(tmp_path, make_manifest(samples=11, epochs=2, world=3, views=2))
    size = m.record.dtype.itemsize
    for epoch in range(2):
        for i in range(11):
            raw = (tmp_path / m.shard_file(epoch, i % 3)).read_bytes()
            expected = batch_records(m.record, epoch, np.array([i]))[0]
            for v in range(2):
                offset = ((i // 3) * 2 + v) * size
                assert raw[offset:offset + size] == expected[v].tobytes(), (epoch, i, v)
    for rank, rows in enumerate((4, 4, 3)):  # 11 samples over 3 ranks: 0,3,6,9 / 1,4,7,10 / 2,5,8
        assert (tmp_path / m.shard_file(0, rank)).stat().st_size == rows * 2 * size


def test_a_finished_cache_lists_every_shard_and_leaves_no_debris(tmp_path):
    m = write_cache(tmp_path, make_manifest(samples=7, epochs=2, world=2))
    assert read_manifest(tmp_path).complete and sorted(m.shards) == sorted(
        m.shard_file(e, r) for e in range(2) for r in range(2))
    for name, entry in m.shards.items():
        verify_shard(tmp_path, name, entry, checksum=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*m.shards, "manifest.json"])


def test_a_shard_missing_a_sample_is_not_finished(tmp_path):
    m = begin(tmp_path, make_manifest(samples=9, world=2, batch_size=2))
    shard = open_shard(tmp_path, m, 0, 1, sync_every_s=0)
    for index, valid in plan(9, 2, 1, 2)[:-1]:  # the last batch never comes
        shard.write(index, valid, batch_records(m.record, 0, index))
    with pytest.raises(RuntimeError, match="2 records written, the shard has 4 rows"):
        shard.finish()
    assert not (tmp_path / m.shard_file(0, 1)).exists()


def test_samples_of_another_rank_are_refused(tmp_path):
    m = begin(tmp_path, make_manifest(samples=9, world=2))
    shard = open_shard(tmp_path, m, 0, 0)
    index = np.array([0, 1])
    with pytest.raises(RuntimeError, match="rank 0 samples of other shards"):
        shard.write(index, np.array([True, True]), batch_records(m.record, 0, index))
    shard.close()


def interrupted_shard(root, m, epoch, rank, durable_steps, written_steps):
    """A writer that made `durable_steps` batches durable, wrote more, then died mid-write (garbage in the
    rows after the durable ones, as a kill during a write may leave)."""
    shard = open_shard(root, m, epoch, rank, sync_every_s=1e9)
    batches = plan(m.samples, m.batch_size, rank, m.world)
    for step, (index, valid) in enumerate(batches[:written_steps]):
        shard.write(index, valid, batch_records(m.record, epoch, index))
        if step + 1 == durable_steps:
            shard.sync()
    row_bytes = m.record.views * m.record.dtype.itemsize
    os.pwrite(shard.fd, b"\xff" * row_bytes * 3, durable_steps * m.batch_size * row_bytes)
    shard.close()
    return batches


def test_a_killed_writer_continues_from_its_last_durable_batch(tmp_path):
    m = begin(tmp_path / "cut", make_manifest(samples=29, epochs=1, world=2, batch_size=3))
    batches = interrupted_shard(tmp_path / "cut", m, 0, 1, durable_steps=2, written_steps=4)
    resumed = open_shard(tmp_path / "cut", m, 0, 1, sync_every_s=0)
    assert resumed.start_step == 2 and resumed.records == 6
    for index, valid in batches[resumed.start_step:]:
        resumed.write(index, valid, batch_records(m.record, 0, index))
    resumed.finish()
    whole = write_cache(tmp_path / "whole", make_manifest(samples=29, epochs=1, world=2, batch_size=3))
    name = whole.shard_file(0, 1)
    assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_another_batch_size_restarts_the_half_written_shard(tmp_path):
    m = begin(tmp_path, make_manifest(samples=29, epochs=1, world=2, batch_size=3))
    interrupted_shard(tmp_path, m, 0, 0, durable_steps=2, written_steps=3)
    m.batch_size = 5
    again = open_shard(tmp_path, m, 0, 0)
    assert again.start_step == 0 and again.records == 0
    again.close()


KILLED_PASS = """
import os, pickle, signal, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import numpy as np
from pipeline.teacher_cache.manifest import write_manifest
from pipeline.teacher_cache.storage import begin, open_shard
root, kill_at = Path(sys.argv[2]), int(sys.argv[3])
m, batches = pickle.loads(Path(sys.argv[4]).read_bytes())  # the manifest; per epoch [(index, valid, records)]
m = begin(root, m)
write_manifest(root, m)
for epoch in range(m.epochs):
    shard = open_shard(root, m, epoch, 0, sync_every_s=0)
    if shard is None:
        continue
    for step in range(shard.start_step, len(batches[epoch])):
        if (epoch, step) == (1, kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        shard.write(*batches[epoch][step])
    shard.finish()
print("done")
"""


def test_sigkill_mid_epoch_then_rerun_gives_the_uninterrupted_cache(tmp_path):
    """A real kill (SIGKILL in the second epoch, batch 5 of 8), then the same pass again: epoch 0 is
    skipped, epoch 1 continues at batch 5, and the shards equal an uninterrupted pass's byte for byte.
    (The subprocess writes records computed here, so it needs numpy and the writer only.)"""
    manifest = make_manifest(samples=29, epochs=2, world=1, batch_size=4)
    batches = [[(index, valid, batch_records(manifest.record, epoch, index)) for index, valid in plan(29, 4, 0, 1)]
               for epoch in range(2)]
    (tmp_path / "pass.pkl").write_bytes(pickle.dumps((manifest, batches)))
    cmd = [sys.executable, "-c", KILLED_PASS, str(REPO), str(tmp_path / "cut")]
    first = subprocess.run(cmd + ["5", str(tmp_path / "pass.pkl")], capture_output=True, text=True)
    assert first.returncode == -signal.SIGKILL, first.stderr
    progress = json.loads((tmp_path / "cut" / "epoch0001-rank0000-of0001.records.partial.progress").read_text())
    assert progress == {"steps": 5, "records": 20, "batch_size": 4}
    epoch0 = (tmp_path / "cut" / "epoch0000-rank0000-of0001.records").stat().st_mtime_ns
    second = subprocess.run(cmd + ["-1", str(tmp_path / "pass.pkl")], capture_output=True, text=True)
    assert second.returncode == 0 and "done" in second.stdout, second.stderr
    assert (tmp_path / "cut" / "epoch0000-rank0000-of0001.records").stat().st_mtime_ns == epoch0  # skipped
    m = finish(tmp_path / "cut", read_manifest(tmp_path / "cut"), None)
    whole = write_cache(tmp_path / "whole", make_manifest(samples=29, epochs=2, world=1, batch_size=4))
    assert m.shards == whole.shards  # sizes and sha256 of every shard
    for name in whole.shards:
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_a_finished_shard_is_skipped_unless_its_file_is_gone(tmp_path):
    m = write_cache(tmp_path, make_manifest(samples=8, epochs=1, world=2))
    assert open_shard(tmp_path, m, 0, 0) is None
    (tmp_path / m.shard_file(0, 1)).unlink()
    again = open_shard(tmp_path, m, 0, 1)
    assert isinstance(again, ShardWriter) and again.start_step == 0
    again.close()
    path = tmp_path / m.shard_file(0, 0)
    path.write_bytes(path.read_bytes()[:-1])  # truncated: not finished either
    assert isinstance(open_shard(tmp_path, m, 0, 0), ShardWriter)


@pytest.mark.parametrize("damage, error, words", [
    ("flip", BadInputError, "does not match its checksum"),
    ("truncate", BadInputError, "bytes, the manifest says"),
    ("delete", MissingInputError, "is missing (the manifest lists it)"),
])
def test_damaged_shards_are_named(tmp_path, damage, error, words):
    m = write_cache(tmp_path, make_manifest(samples=8, epochs=1, world=2))
    name = m.shard_file(0, 1)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-1]))
    else:
        path.unlink()
    with pytest.raises(error) as info:
        verify_shard(tmp_path, name, m.shards[name], checksum=True)
    line = str(info.value)
    assert words in line and str(path) in line and "\n" not in line


def test_flipped_byte_passes_the_size_check_alone(tmp_path):
    """Why checksums: the size check (always) cannot see a flipped byte; the checksum (first open) does."""
    m = write_cache(tmp_path, make_manifest(samples=8, epochs=1, world=1))
    name = m.shard_file(0, 0)
    data = bytearray((tmp_path / name).read_bytes())
    data[0] ^= 0x80
    (tmp_path / name).write_bytes(bytes(data))
    verify_shard(tmp_path, name, m.shards[name], checksum=False)
    with pytest.raises(BadInputError):
        verify_shard(tmp_path, name, m.shards[name], checksum=True)


def test_more_epochs_extend_a_finished_cache(tmp_path):
    write_cache(tmp_path, make_manifest(samples=8, epochs=1, world=2))
    first = (tmp_path / "epoch0000-rank0000-of0002.records").stat().st_mtime_ns
    m = write_cache(tmp_path, make_manifest(samples=8, epochs=3, world=2))
    assert m.epochs == 3 and len(m.shards) == 6 and m.complete
    assert (tmp_path / "epoch0000-rank0000-of0002.records").stat().st_mtime_ns == first


def test_the_manifest_is_marked_incomplete_while_a_pass_runs(tmp_path):
    write_cache(tmp_path, make_manifest(samples=8, epochs=1, world=1))
    m = begin(tmp_path, make_manifest(samples=8, epochs=2, world=1))
    write_manifest(tmp_path, m)
    assert not read_manifest(tmp_path).complete
