"""The manifest of a teacher cache: what it was made from, how its records are laid out, its shards.

`manifest.json` in the cache folder, JSON, replaced atomically. `made_from` holds everything that decides
the teacher's outputs (compared with a run by `match.py`): the teacher (arch, a hash of its weights, the
input statistics it is fed with), the train listing (a hash of its file names and labels), aug_seed,
image size and min_area. `record` says what a record holds (views, K, classes, stored temperatures,
feature dim) and its dtype. Then the epochs, the writer's world size (samples go to shards by
index % world), one entry per shard (bytes, sha256), the teacher's val top-1/top-5 measured by the pass,
and `complete`, set when every shard is written.

Hashes are the first 16 hex digits (64 bits) of a sha256: enough to tell two teachers or listings apart.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.durable import write_text_durably
from pipeline.errors import BadInputError, MissingInputError
from pipeline.teacher_cache.layout import record_dtype, shard_name, stored_temperatures

MANIFEST = "manifest.json"
FORMAT = "kdpipe teacher cache"
LAYOUT_VERSION = 1


def short_sha256(digest: "hashlib._Hash") -> str:
    return "sha256:" + digest.hexdigest()[:16]


def torch_uint8():
    import torch  # lazily: reading a cache needs no torch

    return torch.uint8


def state_dict_sha256(state: dict) -> str:
    """A hash of a network's weights and buffers (name, dtype, shape, bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch_uint8()).numpy().tobytes() if tensor.numel() else b"")
    return short_sha256(digest)


def listing_sha256(names: list[str], labels: np.ndarray) -> str:
    """A hash of the train listing: sample i's name (a path relative to the split's root, or a tar and
    position) and class, in index order. The root itself is left out: a moved dataset keeps its cache."""
    digest = hashlib.sha256()
    digest.update("\n".join(names).encode())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return short_sha256(digest)


def project_version() -> str:
    try:
        return importlib.metadata.version("kdpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class RecordSpec:
    views: int
    topk: int
    num_classes: int
    temperatures: list[float]  # the stored ones: empty when topk == num_classes (exact at every T)
    feature_dim: int  # 0: no features stored

    @classmethod
    def create(cls, views: int, topk: int, num_classes: int, temperatures, feature_dim: int) -> "RecordSpec":
        topk = min(topk, num_classes)  # K above the class count keeps every class
        return cls(views, topk, num_classes, stored_temperatures(topk, num_classes, temperatures), feature_dim)

    @property
    def dtype(self) -> np.dtype:
        return record_dtype(self.topk, self.num_classes, len(self.temperatures), self.feature_dim)

    @property
    def exact(self) -> bool:
        return self.topk == self.num_classes


@dataclass
class Manifest:
    made_from: dict  # label -> value; match.py compares these one by one
    record: RecordSpec
    epochs: int
    samples: int
    world: int  # the writer's: sample i is in shard i % world, row i // world
    batch_size: int  # the pass's inference batch per process (a resumed shard continues only with the same)
    notes: dict = field(default_factory=dict)  # shown in messages, never compared (teacher source, data root)
    teacher_val: dict | None = None  # {"top1", "top5", "images"} measured once by the pass
    shards: dict = field(default_factory=dict)  # shard file name -> {"bytes", "sha256"}
    complete: bool = False
    kdpipe_version: str = field(default_factory=project_version)
    layout_version: int = LAYOUT_VERSION

    def shard_file(self, epoch: int, rank: int) -> str:
        return shard_name(epoch, rank, self.world)

    def to_json(self) -> str:
        data = {"format": FORMAT, **dataclasses.asdict(self)}
        data["record"]["dtype"] = [[name, str(sub.base), list(sub.shape)]
                                   for name, (sub, _) in self.record.dtype.fields.items()]
        data["record"]["bytes"] = self.record.dtype.itemsize
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "Manifest":
        try:
            data = json.loads(text)
            if data.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} manifest")
            if data.get("layout_version") != LAYOUT_VERSION:
                raise BadInputError(f"teacher cache {where} has record layout version {data.get('layout_version')}, "
                                    f"this kdpipe ({project_version()}) reads version {LAYOUT_VERSION}: rerun "
                                    "launch/cache_teacher.py into a new folder")
            record = data.pop("record")
            stated_bytes = record.pop("bytes")
            record.pop("dtype")
            manifest = cls(record=RecordSpec(**record), **data)
        except BadInputError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BadInputError(f"teacher cache {where}: unreadable manifest ({type(e).__name__}: {e})") from None
        if manifest.record.dtype.itemsize != stated_bytes:
            raise BadInputError(f"teacher cache {where}: the manifest says {stated_bytes}-byte records, its record "
                                f"fields make {manifest.record.dtype.itemsize}")
        return manifest


def read_manifest(root: str | Path) -> Manifest | None:
    """The manifest of the cache folder `root`, or None when there is none yet."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    return Manifest.from_json(path.read_text(), str(root))


def load_manifest(root: str | Path) -> Manifest:
    """The manifest of a cache a run reads: it must exist and be complete."""
    manifest = read_manifest(root)
    if manifest is None:
        raise MissingInputError(f"teacher.cache {root}: no {MANIFEST} there (write the cache with "
                                "launch/cache_teacher.py first)")
    if not manifest.complete:
        raise BadInputError(f"teacher cache {root} is incomplete ({len(manifest.shards)} of "
                            f"{manifest.epochs * manifest.world} shards written): rerun launch/cache_teacher.py with "
                            "the same flags to finish it")
    return manifest


def write_manifest(root: str | Path, manifest: Manifest):
    """Replace the manifest whole: temporary file, fsync, rename (a crash leaves the old or the new one)."""
    write_text_durably(Path(root) / MANIFEST, manifest.to_json())
