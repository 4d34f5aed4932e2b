"""pipeline/teacher_cache contracts the cache's own tests leave open: what checking and reading a cache
import, an exact cache (K = classes) keeping no temperatures, the size units at their bounds, one write per
batch in the plan's order, and a random-init teacher's identity remembered like a checkpoint's."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.config import Config, apply
from pipeline.errors import BadInputError
from pipeline.teacher_cache import storage, use
from pipeline.teacher_cache.layout import _human, stored_temperatures
from pipeline.teacher_cache.manifest import RecordSpec
from pipeline.teacher_cache.match import check_continuation
from tests.conftest import REPO
from tests.teacher_cache.cache_fixtures import batch_records, make_manifest, plan


def test_checking_and_reading_a_cache_import_neither_torch_nor_timm():
    """The package docstring: a reader or a writer needs neither torch nor timm until it uses them (a cache
    is checked and read in loader workers and by tools that never train)."""
    code = ("import sys\n"
            "import pipeline.teacher_cache.match, pipeline.teacher_cache.storage, pipeline.teacher_cache.reader\n"
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    # `python -c` puts its working directory first on sys.path: this checkout's pipeline, whatever PYTHONPATH
    # holds (kept, so that a coverage hook on it sees this interpreter too)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_an_exact_cache_keeps_no_temperatures_and_continues_with_others():
    """K = classes: the record serves every temperature, so none is stored, and a pass at another T may
    continue it; with K < classes the temperatures are part of the record and must match."""
    assert stored_temperatures(10, 10, [4.0, 1.0]) == [] and stored_temperatures(9, 10, [4.0, 1.0]) == [1.0, 4.0]
    exact4, exact2 = make_manifest(topk=10, temperatures=(4.0,)), make_manifest(topk=10, temperatures=(2.0,))
    assert exact4.record.temperatures == [] and RecordSpec.create(1, 12, 10, [4.0], 0).temperatures == []
    check_continuation("c", exact4, exact2)
    with pytest.raises(BadInputError, match="temperatures"):
        check_continuation("c", make_manifest(topk=9, temperatures=(4.0,)), make_manifest(topk=9, temperatures=(2.0,)))


@pytest.mark.parametrize("n, text", [
    (10**12, "1.00 TB"), (10**12 - 1, "1000.00 GB"), (10**9, "1.00 GB"), (10**9 - 1, "1000.00 MB"),
    (10**6, "1.00 MB"), (10**6 - 1, "1000.00 kB"), (1000, "1.00 kB"), (999, "999 B"),
])
def test_size_units_at_their_bounds(n, text):
    """At each unit's bound the larger unit; one byte below it the smaller (two decimals round it up to 1000)."""
    assert _human(n) == text


def test_a_batch_in_the_plans_order_is_one_write(tmp_path, monkeypatch):
    """storage.ShardWriter.write: rows in the plan's order (consecutive) go out in one pwrite; rows out of
    order one each; both land at their offsets."""
    m = make_manifest(samples=40, world=2, batch_size=4)
    calls = []
    real = os.pwrite
    monkeypatch.setattr(storage.os, "pwrite",
                        lambda fd, data, offset: calls.append(len(data)) or real(fd, data, offset))
    shard = storage.open_shard(tmp_path, m, 0, 1, sync_every_s=1e9)
    (index, valid), *_ = plan(m.samples, m.batch_size, 1, m.world)
    assert valid.all() and (np.diff(index) == m.world).all()  # rank 1's first batch: 1, 3, 5, 7
    shard.write(index, valid, batch_records(m.record, 0, index))
    assert calls == [4 * shard.row_bytes]
    calls.clear()
    index = np.array([15, 9, 13, 11])
    shard.write(index, np.ones(4, bool), batch_records(m.record, 0, index))
    assert calls == [shard.row_bytes] * 4
    shard.close()
    stored = np.fromfile(tmp_path / (shard.name + ".partial"), dtype=m.record.dtype).reshape(-1, m.record.views)
    for i in (1, 3, 5, 7, 9, 11, 13, 15):
        assert stored[i // 2].tobytes() == batch_records(m.record, 0, np.array([i]))[0].tobytes(), i


def test_a_random_init_teachers_identity_is_built_once(monkeypatch):
    """No checkpoint file (random init): the identity is remembered as it is for a file (preflight, then the
    Trainer) and the network is built once."""
    cfg = apply(Config(), {"teacher": {"arch": "resnet10t", "checkpoint": "", "pretrained": False}}, "test")
    import pipeline.models

    built = []
    real = pipeline.models.create_network
    monkeypatch.setattr(pipeline.models, "create_network", lambda *a: built.append(1) or real(*a))
    monkeypatch.setattr(use, "_TEACHER_IDENTITIES", {})
    first = use.run_teacher_identity(cfg, 7)
    assert use.run_teacher_identity(cfg, 7) == first and built == [1]
    assert first["teacher.arch"] == "resnet10t" and first["teacher weights"].startswith("sha256:")


def test_unfinished_shards_are_named_four_then_counted(tmp_path):
    m = make_manifest(epochs=2, world=3)  # 6 shards, none written
    names = [m.shard_file(e, r) for e in range(2) for r in range(3)]
    with pytest.raises(RuntimeError) as info:
        storage.finish(tmp_path, m, None)
    assert str(info.value).endswith(f"shards not written: {', '.join(names[:4])} (+2)")


def test_records_of_another_view_count_are_refused_naming_both(tmp_path):
    m = make_manifest(views=2)
    shard = storage.open_shard(tmp_path, m, 0, 0, sync_every_s=1e9)
    wrong = np.zeros((4, 1), dtype=m.record.dtype)
    with pytest.raises(RuntimeError, match=r"x \(1,\) do not match the manifest's .* x \(2,\)$"):
        shard.write(np.arange(4) * m.world, np.ones(4, bool), wrong)
    shard.close()
