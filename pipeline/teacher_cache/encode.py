"""Teacher outputs -> cache records (the writer's side; `rebuild.py` is the reader's).

Per row: the top-K logits minus the row's maximum (fp16), their classes, and for each stored
temperature T the tail's log-mass log sum_{j not in top K} exp((y_j - y_max) / T), computed in fp32 from
the unrounded logits. A student's target at T is then exact on the top K and exact in the total mass
of the rest (`rebuild.py` spreads that mass evenly over the other classes).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.teacher_cache.layout import INT16_CLASSES, record_dtype

FP16_MAX = 65504.0  # fp16's largest finite value: relative logits and features are clamped into range


def encode(logits: torch.Tensor, features: torch.Tensor | None, topk: int, temperatures: list[float]
           ) -> dict[str, torch.Tensor]:
    """logits (N, C), features (N, d) or None -> {'tail' (N, T) fp32 when K < C and temperatures are given,
    'classes' (N, K) int16/int32, 'values' (N, K) fp16, 'features' (N, d) fp16 when given}, on their device.
    `temperatures` are the stored ones (layout.stored_temperatures)."""
    y = logits.float()
    num_classes = y.shape[1]
    top, classes = y.topk(topk, dim=1)  # sorted, largest first
    relative = y - top[:, :1]
    out = {}
    if topk < num_classes and temperatures:
        tail = relative.scatter(1, classes, float("-inf"))  # the top K leave the sum
        out["tail"] = torch.stack([torch.logsumexp(tail / t, dim=1) for t in temperatures], dim=1)
    out["classes"] = classes.to(torch.int16 if num_classes <= INT16_CLASSES else torch.int32)
    out["values"] = (top - top[:, :1]).clamp_min(-FP16_MAX).half()
    if features is not None:
        out["features"] = features.float().clamp(-FP16_MAX, FP16_MAX).half()
    return out


def to_records(fields: dict[str, torch.Tensor], views: int, dtype: np.dtype) -> np.ndarray:
    """Encoded fields of a view-major batch ((views * B, ...): view 0's B rows, then view 1's, the
    loaders' layout) -> a (B, views) array of records, as a shard stores them."""
    rows = next(iter(fields.values())).shape[0]
    records = np.empty((rows // views, views), dtype=dtype)
    for name in dtype.names:
        value = fields[name].cpu().numpy()
        records[name] = value.reshape(views, rows // views, *value.shape[1:]).swapaxes(0, 1)
    return records


def encode_records(logits: torch.Tensor, features: torch.Tensor | None, views: int, topk: int,
                   temperatures: list[float]) -> np.ndarray:
    """The cache pass's step: a view-major batch of teacher outputs -> (B, views) records. Non-finite
    logits stop the pass (a NaN must never be stored as the teacher's answer)."""
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError("the teacher's logits are not finite for this batch; nothing of it was written")
    fields = encode(logits, features, topk, temperatures)
    dim = features.shape[1] if features is not None else 0
    return to_records(fields, views, record_dtype(topk, logits.shape[1], len(temperatures), dim))
