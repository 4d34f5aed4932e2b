"""The method interface and registry.

A method declares what it needs (views, the teacher, the sample index), owns its parameters and
buffers (heads, scalars, memory banks, extra networks) and returns a dict of named, already-weighted
loss terms. `--method a+b` builds each term once and sums the dicts; the trainer never branches on
a method's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from pipeline.config import Config

METHODS: dict[str, type["Method"]] = {}
ALIASES = {"dccd": "kd+dkd+ccd"}


def register(name: str):
    def wrap(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


@dataclass
class NetOutput:
    logits: torch.Tensor  # (views * B, C)
    features: torch.Tensor  # (views * B, d): pooled pre-logit features

    def logits_at(self, temperature: float) -> torch.Tensor:
        """Logits whose softmax at `temperature` is this network's: its own, at every temperature. A teacher
        read from a cache (pipeline/teacher_cache/rebuild.py) answers with logits rebuilt for that temperature,
        so methods ask for the teacher's logits through this call, never `.logits`."""
        return self.logits


@dataclass
class TeacherNeeds:
    """What a method (or a `+` combination) reads from the teacher, so a teacher cache can be checked
    against it before the run: logits whose softmax must be the teacher's at each temperature (keyed by
    the config key that sets it), the pooled features, and the terms that use the logits beyond their
    softmax at T (dkd: differences between views), which a top-K cache with K < classes only approximates."""
    temperatures: dict[str, float] = field(default_factory=dict)  # e.g. {"kd.temperature": 4.0}
    features: tuple[str, ...] = ()  # the terms that need the features
    approximate_below_all_classes: tuple[str, ...] = ()

    def __or__(self, other: "TeacherNeeds") -> "TeacherNeeds":
        return TeacherNeeds({**self.temperatures, **other.temperatures}, self.features + other.features,
                            self.approximate_below_all_classes + other.approximate_below_all_classes)

    def __bool__(self) -> bool:
        return bool(self.temperatures or self.features)


@dataclass
class Outputs:
    """One step's forward results; with two views, rows [0, B) are view a and [B, 2B) view b."""
    images: torch.Tensor  # (views * B, 3, H, W)
    labels: torch.Tensor  # (views * B,)
    student: NetOutput
    teacher: NetOutput | None  # or a teacher_cache.CachedTeacher: `features` and `logits_at(T)` alike
    views: int
    index: torch.Tensor | None = None  # (B,) dataset indices, for methods with needs_index

    def per_view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.chunk(self.views)


@dataclass
class MethodContext:
    """What a method may build from: the config, the networks' sizes, and a network factory."""
    cfg: Config
    student_dim: int
    teacher_dim: int
    num_classes: int
    num_train_samples: int
    build_teacher_like: Callable[[], nn.Module]  # a fresh, randomly initialised network of the teacher's arch
    # The class of every train sample by dataset index, (num_train_samples,) int64; called only by methods
    # that need it (CRD's negatives), since a webdataset loader reads it from the shards.
    sample_labels: Callable[[], torch.Tensor] | None = None


class Method(nn.Module):
    name = "?"
    views = 1  # views of each image the method needs (1 or 2)
    needs_teacher = True
    needs_index = False
    # Not None: the method replaces train.ce_weight (it folds CE into its own loss). The class value marks
    # that (parse_method allows one such term); the Distiller uses the instance's, computed from the config.
    ce_weight: float | None = None
    # Buffers too large for the trainer to copy before every step (CRD's N x 128 memory banks): the method
    # keeps what a step changes in them and puts it back in `restore_if_skipped`. Every other buffer is
    # restored by the trainer when a step is skipped (pipeline/nonfinite.py).
    large_buffers: tuple[str, ...] = ()

    def __init__(self, ctx: MethodContext):
        super().__init__()

    def forward(self, out: Outputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def teacher_needs(cls, cfg: Config) -> TeacherNeeds:
        """What this term reads from the teacher under `cfg` (a class method: a cache is checked before any
        network is built). Every term that uses the teacher declares it; `needs_teacher` must agree."""
        return TeacherNeeds()

    def restore_if_skipped(self, skipped: torch.Tensor) -> None:
        """After the optimizer step, with the step's flag (a 0-d bool on the device, never read on the host):
        where it is true, undo this step's change to `large_buffers`."""

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of parameters kept out of weight decay: scalars, biases, norms."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1}

    def extra_networks(self) -> dict[str, nn.Module]:
        """Networks besides the student that are worth evaluating (e.g. SLKD's self-learning teachers)."""
        return {}

    @classmethod
    def check_combination(cls, names: list[str]) -> str | None:
        """Why this method cannot run together with the other terms in `names`, or None if it can."""
        return None


def parse_method(spec: str) -> list[str]:
    """'icd+kd' -> ['icd', 'kd']; aliases expand; unknown or repeated terms are errors naming the choices."""
    names: list[str] = []
    for term in spec.split("+"):
        term = term.strip()
        names += ALIASES[term].split("+") if term in ALIASES else [term]
    choices = ", ".join(sorted(METHODS) + sorted(ALIASES))
    for n in names:
        if n not in METHODS:
            raise ValueError(f"unknown method term '{n}' in --method {spec!r} (choices: {choices})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--method {spec!r} names {', '.join(repeated)} more than once")
    for n in names:
        reason = METHODS[n].check_combination(names)
        if reason:
            raise ValueError(f"--method {spec!r}: {reason}")
    overriding = [n for n in names if METHODS[n].ce_weight is not None]
    if len(overriding) > 1:
        raise ValueError(f"--method {spec!r}: {' and '.join(overriding)} each set the cross-entropy weight")
    return names


def teacher_needs(spec: str, cfg: Config) -> TeacherNeeds:
    """The teacher needs of every term of `spec`, combined."""
    needs = TeacherNeeds()
    for name in parse_method(spec):
        needs = needs | METHODS[name].teacher_needs(cfg)
    return needs


def build_methods(spec: str, ctx: MethodContext) -> list[Method]:
    return [METHODS[name](ctx) for name in parse_method(spec)]
