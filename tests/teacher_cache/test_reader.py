"""Reading records back by (epoch, dataset indices, views), whatever the writer's number of processes."""
import numpy as np
import pytest

from cache_fixtures import batch_records, make_manifest, write_cache
from pipeline.errors import BadInputError, MissingInputError
from pipeline.teacher_cache.reader import CacheReader
from pipeline.teacher_cache.rebuild import EXTRA_KEYS


@pytest.mark.parametrize("world", [1, 3])
def test_any_index_order_and_any_epoch_read_back_exactly(tmp_path, world):
    m = write_cache(tmp_path, make_manifest(samples=23, epochs=3, world=world, views=2))
    reader = CacheReader(tmp_path)
    index = np.array([22, 0, 7, 7, 13, 1, 20])  # unsorted, a repeat, both ends, every shard
    for epoch in (2, 0, 1):
        got = reader.records(epoch, index, views=2)
        for b, i in enumerate(index):
            expected = batch_records(m.record, epoch, np.array([i]))[0]  # what the teacher gave (epoch, i, both views)
            assert got[b].tobytes() == expected.tobytes(), (epoch, i)


def test_the_hook_returns_named_arrays_shaped_batch_by_views(tmp_path):
    m = write_cache(tmp_path, make_manifest(samples=10, epochs=1, world=2, views=2, topk=3, feature_dim=6,
                                            temperatures=(1.0, 4.0)))
    extras = CacheReader(tmp_path)(0, np.array([4, 9, 2]), views=1)  # a one-view run reads view 0
    assert {k: (v.shape, v.dtype.str) for k, v in extras.items()} == {
        "teacher_tail": ((3, 1, 2), "<f4"), "teacher_classes": ((3, 1, 3), "<i2"),
        "teacher_values": ((3, 1, 3), "<f2"), "teacher_features": ((3, 1, 6), "<f2")}
    expected = batch_records(m.record, 0, np.array([4, 9, 2]))[:, :1]
    for field, key in EXTRA_KEYS.items():
        assert np.array_equal(extras[key], expected[field]) and extras[key].flags.c_contiguous


def test_more_views_or_other_samples_than_cached_are_refused(tmp_path):
    write_cache(tmp_path, make_manifest(samples=10, epochs=1, world=2, views=1))
    reader = CacheReader(tmp_path)
    with pytest.raises(ValueError, match="holds 1 view"):
        reader.records(0, np.array([1]), views=2)
    with pytest.raises(IndexError, match="samples 0..9"):
        reader.records(0, np.array([10]), views=1)
    with pytest.raises(IndexError, match="epochs 0..0"):
        reader.records(1, np.array([1]), views=1)


def test_a_damaged_shard_is_an_error_on_the_first_read_of_its_epoch(tmp_path):
    m = write_cache(tmp_path, make_manifest(samples=10, epochs=2, world=2))
    path = tmp_path / m.shard_file(1, 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))
    reader = CacheReader(tmp_path)
    reader.records(0, np.arange(10), views=1)  # epoch 0 is sound
    with pytest.raises(BadInputError, match="epoch0001-rank0000-of0002.records does not match its checksum"):
        reader.records(1, np.array([1]), views=1)  # sample 1 is in the other shard: the whole epoch is checked


def test_an_unfinished_or_absent_cache_is_not_read(tmp_path):
    with pytest.raises(MissingInputError, match="no manifest.json"):
        CacheReader(tmp_path)
    m = write_cache(tmp_path, make_manifest(samples=10, epochs=1, world=2))
    m.complete = False
    (tmp_path / "manifest.json").write_text(m.to_json())
    with pytest.raises(BadInputError, match="incomplete .2 of 2 shards written.: rerun launch/cache_teacher.py"):
        CacheReader(tmp_path)


def test_a_pickled_reader_maps_the_shards_again_instead_of_copying_them(tmp_path):
    """A loader worker started by spawn gets the reader pickled: no shard data travels with it."""
    import pickle

    m = write_cache(tmp_path, make_manifest(samples=200, epochs=1, world=2))
    reader = CacheReader(tmp_path)
    reader.records(0, np.arange(10), views=1)
    pickled = pickle.dumps(reader)
    copy = pickle.loads(pickled)
    assert copy._epochs == {} and b"numpy" not in pickled
    assert len(pickled) < len(pickle.dumps(m)) + 1000 < 200 * 2 * m.record.dtype.itemsize  # 12.8 kB of records
    assert copy.records(0, np.arange(10), views=2).tobytes() == reader.records(0, np.arange(10), views=2).tobytes()
