"""Cache records -> the teacher's outputs, on the device, in the form the methods already take.

For each temperature T a method asks for, dense logits z with softmax(z / T) equal to the cached target:
  z[c_k] = v_k                                  (the top K: v_k = y_{c_k} - y_max, as stored)
  z[j]   = T * (tail_T - log(C - K))            (every other class)
so softmax(z / T) gives each top-K class exp(v_k / T) / Z and each other class exp(tail_T) / (C - K) / Z
with Z = sum_k exp(v_k / T) + exp(tail_T): the teacher's top-K probabilities exactly and the teacher's
remaining mass exactly, spread evenly. The KD kernels take z as they take live logits (a softmax does
not see the missing shift by y_max). With K = C there is no tail and z is the live logits minus their
maximum, up to the fp16 rounding of the stored values, at every temperature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.teacher_cache.layout import EXTRA_KEYS  # also read from here (benchmark.py, tests)


@dataclass
class CachedTeacher:
    """A teacher's outputs read from a cache: what `NetOutput` offers the methods, `features` and
    `logits_at(T)`, for the temperatures rebuilt at construction (outside any compiled region)."""
    logits_by_temperature: dict[float, torch.Tensor]  # T -> (views * B, C) fp32; one entry, key None, when exact
    features: torch.Tensor | None  # (views * B, d) fp32, or None when the cache stores none

    def logits_at(self, temperature: float) -> torch.Tensor:
        if None in self.logits_by_temperature:  # K = classes: the same logits serve every temperature
            return self.logits_by_temperature[None]
        try:
            return self.logits_by_temperature[float(temperature)]
        except KeyError:
            raise KeyError(f"the cached teacher was rebuilt at temperatures {sorted(self.logits_by_temperature)}, "
                           f"not {temperature} (teacher_cache.match checks a run's temperatures first)") from None


def dense_logits(values: torch.Tensor, classes: torch.Tensor, tail: torch.Tensor | None, num_classes: int,
                 temperature: float) -> torch.Tensor:
    """values (N, K) (relative logits), classes (N, K), tail (N,) log-mass at `temperature` or None when
    K = C -> (N, C) fp32 logits whose softmax at `temperature` is the cached target."""
    rows, topk = values.shape
    if topk == num_classes:
        z = torch.empty(rows, num_classes, dtype=torch.float32, device=values.device)
    else:
        fill = temperature * (tail.float() - math.log(num_classes - topk))
        z = fill[:, None].expand(rows, num_classes).clone()
    return z.scatter_(1, classes.long(), values.float())


def rebuild(extras: dict[str, torch.Tensor], num_classes: int, stored_temperatures: list[float],
            temperatures) -> CachedTeacher:
    """A batch's cache fields ((views * B, ...) device tensors named as in EXTRA_KEYS) -> a CachedTeacher
    with logits rebuilt for each of `temperatures` (those the run's methods ask for; they must be among
    `stored_temperatures` unless the cache keeps every class)."""
    values, classes = extras[EXTRA_KEYS["values"]], extras[EXTRA_KEYS["classes"]]
    features = extras.get(EXTRA_KEYS["features"])
    features = features.float() if features is not None else None
    if values.shape[1] == num_classes:
        return CachedTeacher({None: dense_logits(values, classes, None, num_classes, 1.0)}, features)
    tail = extras.get(EXTRA_KEYS["tail"])
    logits = {}
    for t in sorted({float(t) for t in temperatures}):
        if t not in stored_temperatures:
            raise KeyError(f"the cache stores the tail mass at temperatures {stored_temperatures}, not at {t}")
        logits[t] = dense_logits(values, classes, tail[:, stored_temperatures.index(t)], num_classes, t)
    return CachedTeacher(logits, features)
