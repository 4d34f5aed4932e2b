"""bench/step.py's tables: the ratios of the cases, against hand-worked numbers."""
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO))
from bench.step import tables  # noqa: E402


def test_tables_of_the_live_cached_and_alone_steps():
    times = {f"kd {case}": {"wall": wall, "cpu": cpu} for case, wall, cpu in (
        ("ours", 0.30, 0.20), ("cached", 0.22, 0.11), ("alone", 0.20, 0.10))}
    (header, rows), (cache_header, cache_rows) = tables(["kd"], times, ["ours", "cached", "alone"])
    assert header == ["method", "clock", "ours ms", "cached ms", "alone ms"]
    assert rows[0][:2] == ["kd", "wall"] and [round(x, 9) for x in rows[0][2:]] == [300, 220, 200]
    assert cache_header[-3:] == ["live / alone", "cached / alone", "cached / live"]
    assert cache_rows[0][-3:] == ["1.500", "1.100", "0.733"]  # 0.30/0.20, 0.22/0.20, 0.22/0.30
    assert cache_rows[1][-3:] == ["2.000", "1.100", "0.550"]  # CPU clock: 0.20/0.10, 0.11/0.10, 0.11/0.20


def test_tables_against_the_floors():
    times = {f"dccd {case}": {"wall": wall, "cpu": wall} for case, wall in (
        ("ours", 1.0), ("papers", 1.2), ("floor", 0.9), ("floor-fused", 0.8))}
    (header, rows), (_, cache_rows) = tables(["dccd"], times, ["ours", "papers", "floor", "floor-fused"])
    assert header[-2:] == ["ours / best floor", "papers / ours"] and cache_rows == []
    assert rows[0][-2:] == ["1.250", "1.200"]  # 1.0 / min(0.9, 0.8); 1.2 / 1.0
