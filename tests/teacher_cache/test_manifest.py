"""The manifest's JSON round trip and checks, and the hashes it holds (against hashes computed by hand)."""
import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from cache_fixtures import make_manifest
from pipeline.errors import BadInputError
from pipeline.teacher_cache.manifest import Manifest, listing_sha256, state_dict_sha256


def test_round_trip_keeps_everything():
    m = make_manifest(topk=3, temperatures=(4.0, 1.0), feature_dim=6)
    m.shards = {"a": {"bytes": 10, "sha256": "sha256:00"}}
    m.teacher_val, m.notes = {"top1": 81.5, "top5": 99.0, "images": 2000}, {"teacher weights": "t.safetensors"}
    back = Manifest.from_json(m.to_json(), "here")
    assert back == m and back.record.temperatures == [1.0, 4.0]  # stored sorted
    data = json.loads(m.to_json())
    assert data["record"]["bytes"] == 8 + 6 + 6 + 12  # tail 2 x f4, classes 3 x i2, values 3 x f2, features 6 x f2
    assert data["record"]["dtype"] == [["tail", "float32", [2]], ["classes", "int16", [3]],
                                       ["values", "float16", [3]], ["features", "float16", [6]]]


def test_a_manifest_whose_record_size_disagrees_is_refused():
    data = json.loads(make_manifest().to_json())
    data["record"]["bytes"] += 2
    with pytest.raises(BadInputError, match="the manifest says 34-byte records, its record fields make 32"):
        Manifest.from_json(json.dumps(data), "here")


def test_another_layout_version_names_both():
    data = json.loads(make_manifest().to_json())
    data["layout_version"] = 99
    with pytest.raises(BadInputError, match="teacher cache here has record layout version 99, .* reads version 1"):
        Manifest.from_json(json.dumps(data), "here")


@pytest.mark.parametrize("text", ["{", '{"format": "something else"}', '{"format": "kdpipe teacher cache", '
                                  '"layout_version": 1, "record": {}}'])
def test_an_unreadable_manifest_is_one_line(text):
    with pytest.raises(BadInputError) as info:
        Manifest.from_json(text, "here")
    assert str(info.value).startswith("teacher cache here: unreadable manifest") and "\n" not in str(info.value)


def test_weights_hash_by_hand():
    state = {"b": torch.tensor([2, 3], dtype=torch.int64), "a": torch.tensor([1.5], dtype=torch.float32)}
    digest = hashlib.sha256()
    digest.update(b"a|torch.float32|(1,)|" + struct.pack("<f", 1.5))  # names in order, whatever the dict's
    digest.update(b"b|torch.int64|(2,)|" + struct.pack("<qq", 2, 3))
    assert state_dict_sha256(state) == "sha256:" + digest.hexdigest()[:16]
    assert state_dict_sha256({"a": torch.tensor(1.5)}) != state_dict_sha256({"a": torch.tensor([1.5])})  # shape


def test_listing_hash_by_hand():
    digest = hashlib.sha256(b"n0/a.jpg\nn1/b.jpg" + struct.pack("<qq", 0, 1))
    assert listing_sha256(["n0/a.jpg", "n1/b.jpg"], np.array([0, 1], dtype=np.int32)) == "sha256:" + digest.hexdigest()[:16]
    assert listing_sha256(["n0/a.jpg", "n1/b.jpg"], np.array([0, 0])) != listing_sha256(["n0/a.jpg", "n1/b.jpg"],
                                                                                        np.array([0, 1]))
