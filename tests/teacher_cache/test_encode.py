"""Teacher outputs -> records, against float64 references computed here."""
import numpy as np
import pytest
import torch

from cache_fixtures import teacher_features, teacher_logits, view_major
from pipeline.teacher_cache.encode import encode, encode_records


def rel(out, ref) -> float:
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def test_fields_against_float64():
    y = teacher_logits(0, np.arange(7), 0).double().numpy()  # offset ~40: absolute fp16 would be 2^-6 coarse
    k, temps = 3, [1.0, 4.0]
    fields = encode(torch.from_numpy(y).float(), None, k, temps)
    order = np.argsort(-y, axis=1)[:, :k]
    assert np.array_equal(fields["classes"].numpy(), order) and fields["classes"].dtype == torch.int16
    top = np.take_along_axis(y, order, axis=1)
    relative = top - top[:, :1]
    assert fields["values"].dtype == torch.float16 and (fields["values"][:, 0] == 0).all()
    assert np.abs(fields["values"].double().numpy() - relative).max() <= 2.0**-11 * np.abs(relative).max()
    for j, t in enumerate(temps):
        rest = np.ones_like(y, dtype=bool)
        np.put_along_axis(rest, order, False, axis=1)
        tail = np.log(np.where(rest, np.exp((y - y.max(axis=1, keepdims=True)) / t), 0).sum(axis=1))
        assert rel(fields["tail"][:, j].numpy(), tail) < 1e-6, t
    assert "features" not in fields


def test_every_class_kept_means_no_tail():
    fields = encode(teacher_logits(1, np.arange(4), 0), None, 10, [])
    assert set(fields) == {"classes", "values"}


def test_class_indices_widen_above_int16():
    y = torch.zeros(2, 40000)
    y[0, 39999], y[1, 32768] = 5.0, 7.0
    fields = encode(y, None, 1, [4.0])
    assert fields["classes"].dtype == torch.int32 and fields["classes"][:, 0].tolist() == [39999, 32768]


def test_far_values_and_features_clamp_to_fp16_range():
    y = torch.tensor([[0.0, -1e6, 3.0]])
    fields = encode(y, torch.tensor([[1e6, -2.0]]), 3, [])
    assert torch.isfinite(fields["values"].float()).all() and fields["values"][0, 2] == -65504
    assert fields["features"].tolist() == [[65504.0, -2.0]]


def test_records_are_sample_major_from_a_view_major_batch():
    """Records (B, views): record [b, v] holds view v of sample b (the batch had view 0's B rows first)."""
    index = np.array([5, 2, 9])
    logits = view_major([teacher_logits(0, index, v) for v in range(2)])
    features = view_major([teacher_features(0, index, v) for v in range(2)])
    records = encode_records(logits, features, views=2, topk=2, temperatures=[4.0])
    assert records.shape == (3, 2)
    for b in range(3):
        for v in range(2):
            alone = encode(teacher_logits(0, index[b:b + 1], v), teacher_features(0, index[b:b + 1], v), 2, [4.0])
            for name in records.dtype.names:
                assert np.array_equal(records[b, v][name], alone[name][0].numpy()), (b, v, name)


def test_non_finite_logits_are_never_encoded():
    logits = teacher_logits(0, np.arange(4), 0)
    logits[2, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        encode_records(logits, None, 1, 2, [4.0])
