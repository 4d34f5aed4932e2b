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
Import from the modules themselves: this file imports nothing, so a reader or a writer needs neither
torch nor timm until it uses them.
"""
