"""The record layout and the cache's sizes, against hand counts."""
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.teacher_cache.layout import (IMAGENET_TRAIN, cache_bytes, record_bytes, record_dtype, shard_name,
                                           shard_of, shard_rows, size_table)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("topk, classes, temperatures, dim, expected", [
    # tail 4 per temperature (only when K < classes) + classes 2 per K (int16) + values 2 per K + features 2 per d
    (2, 10, [4.0], 0, 4 + 2 * 2 + 2 * 2),  # 12: the demo at K = 2
    (2, 10, [4.0], 512, 4 + 4 + 4 + 2 * 512),  # 1036
    (10, 10, [4.0], 0, 10 * 2 + 10 * 2),  # 40: K = classes keeps no tail
    (10, 10, [4.0], 512, 40 + 1024),  # 1064
    (10, 1000, [4.0], 0, 4 + 20 + 20),  # 44: ImageNet-1k at K = 10
    (10, 1000, [1.0, 4.0], 0, 8 + 20 + 20),  # 48: a second temperature
    (10, 1000, [4.0, 4.0], 0, 4 + 20 + 20),  # a temperature named twice is stored once
    (10, 40000, [4.0], 0, 4 + 4 * 10 + 2 * 10),  # 64: int32 classes above 32767 classes
    (10, 32767, [4.0], 0, 44),  # the last class count with int16 indices
])
def test_record_bytes_by_hand(topk, classes, temperatures, dim, expected):
    assert record_bytes(topk, classes, temperatures, dim) == expected


def test_field_offsets_align_each_field():
    dtype = record_dtype(3, 40000, 2, 5)
    offsets = {name: offset for name, (_, offset) in dtype.fields.items()}
    assert offsets == {"tail": 0, "classes": 8, "values": 8 + 12, "features": 8 + 12 + 6}
    assert dtype.itemsize == 8 + 12 + 6 + 10
    for name, (sub, offset) in dtype.fields.items():
        assert offset % sub.base.itemsize == 0, name
    assert "tail" not in record_dtype(10, 10, 2, 0).names  # K = classes: nothing outside the top K


def test_imagenet_cache_size_by_hand():
    assert cache_bytes(IMAGENET_TRAIN, 100, 1, 10, 1000, [4.0], 0) == 1_281_167 * 100 * 44  # 5.64 GB
    assert cache_bytes(IMAGENET_TRAIN, 100, 2, 10, 1000, [4.0], 512) == 1_281_167 * 100 * 2 * (44 + 1024)
    assert cache_bytes(200, 30, 1, 2, 10, [4.0], 0) == 200 * 30 * 12


def test_topk_out_of_range_is_refused():
    with pytest.raises(ValueError, match="1..10"):
        record_dtype(11, 10, 1, 0)
    with pytest.raises(ValueError):
        record_dtype(0, 10, 1, 0)


@pytest.mark.parametrize("samples, world", [(23, 3), (2, 4), (12, 1), (7, 7)])
def test_every_sample_has_one_shard_row(samples, world):
    """Brute force: rank r's shard lists r, r + world, ... in order; each sample is in exactly one row."""
    shard, row = shard_of(np.arange(samples), world)
    for rank in range(world):
        mine = [i for i in range(samples) if i % world == rank]
        assert shard_rows(samples, rank, world) == len(mine)
        assert np.array_equal(row[shard == rank], np.arange(len(mine)))
        assert np.array_equal(np.flatnonzero(shard == rank), mine)


def test_shard_names_sort_by_epoch_then_rank():
    names = [shard_name(e, r, 12) for e in (0, 1, 10) for r in (0, 2, 11)]
    assert names == sorted(names) and len(set(names)) == len(names)


def test_docs_size_table_is_the_function_output():
    """docs/teacher-cache.md's table is size_table() verbatim (regenerate the page when the layout changes)."""
    page = (REPO / "docs" / "teacher-cache.md").read_text()
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| data |"))
    end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or not lines[i].startswith("|"))
    table = "\n".join(lines[start:end])
    assert table == size_table()
    # and a figure in it, by hand: ImageNet-1k, K = 10, one view, no features: 44 B x 1,281,167 x 100 = 5.64 GB
    assert re.search(r"\| ImageNet-1k, 100 epochs \| 1000 \| 1 \| 10 \| 4\.0 \| - \| 44 \| 44 \| 5\.64 GB \|", page)
