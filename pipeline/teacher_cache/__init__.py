"""The teacher once, students many: a cache of a frozen teacher's outputs on replayed train views.

  layout.py        the record (top-K relative logits fp16, classes int16/32, tail log-mass fp32 per T,
                   features fp16), shard addressing by index, sizes
  encode.py        teacher outputs -> records (the cache pass)
  rebuild.py       records -> dense teacher logits per temperature on the device (a run)
  manifest.py      what a cache was made from, its layout and shards; hashes
  identity.py      the `made_from` entries, computed alike by the pass and by a run
  match.py         a cache against a run (or a continued pass): one-line errors naming both sides
  storage.py       atomic shard writing, resume of a killed writer, shard checks
  reader.py        (epoch, indices, views) -> records as numpy arrays (the loaders' extras hook)
  loader_hooks.py  the only calls into pipeline/data

`launch/cache_teacher.py` runs the pass; docs/teacher-cache.md describes the format and its sizes.
"""
from pipeline.teacher_cache.encode import encode, encode_records
from pipeline.teacher_cache.identity import made_from, notes, resolved_aug_seed
from pipeline.teacher_cache.layout import cache_bytes, record_bytes, record_dtype
from pipeline.teacher_cache.manifest import Manifest, RecordSpec, load_manifest, read_manifest, write_manifest
from pipeline.teacher_cache.match import check_continuation, check_run
from pipeline.teacher_cache.reader import CacheReader
from pipeline.teacher_cache.rebuild import EXTRA_KEYS, CachedTeacher, rebuild
from pipeline.teacher_cache.storage import begin, finish, open_shard, verify_shard

__all__ = ["CacheReader", "CachedTeacher", "EXTRA_KEYS", "Manifest", "RecordSpec", "begin", "cache_bytes",
           "check_continuation", "check_run", "encode", "encode_records", "finish", "load_manifest", "made_from",
           "notes", "open_shard", "read_manifest", "rebuild", "record_bytes", "record_dtype", "resolved_aug_seed",
           "verify_shard", "write_manifest"]
