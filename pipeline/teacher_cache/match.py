"""Whether a teacher cache can stand in for the teacher of a run (or be continued by a cache pass).

Every mismatch is one line naming both sides, raised as a BadInputError (exit 2): another teacher
(arch, weights, input statistics), other data (the train listing), another aug_seed, image size or
min_area, fewer views or epochs than the run needs, a temperature the cache has no tail mass for, or
features it does not store. When several things differ, the first is named and the rest counted.
A term that a top-K cache only approximates (dkd, with K < classes) is a warning, returned to log.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import BadInputError
from pipeline.teacher_cache.manifest import Manifest

if TYPE_CHECKING:  # the methods import torch; checking a manifest needs neither
    from pipeline.methods.base import TeacherNeeds


def _value(value, note: str | None) -> str:
    return f"{value} ({note})" if note else f"{value}"


def _raise_first(problems: list[str]):
    if problems:
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise BadInputError(problems[0] + more)


def differences(cached: dict, current: dict, cached_notes: dict, current_notes: dict) -> list[tuple[str, str, str]]:
    """(label, cached value, current value) for every `made_from` entry that differs (an entry one side
    lacks reads 'none', e.g. a mixing setting added after the cache was made)."""
    out = []
    for label in list(cached) + [k for k in current if k not in cached]:
        a, b = cached.get(label, "none"), current.get(label, "none")
        if a != b:
            out.append((label, _value(a, cached_notes.get(label)), _value(b, current_notes.get(label))))
    return out


def check_run(root: str, manifest: Manifest, made_from: dict, needs: TeacherNeeds, *, views: int, epochs: int,
              method: str, notes: dict | None = None) -> list[str]:
    """Raise a one-line BadInputError if the cache at `root` cannot serve a run that has `made_from` (see
    identity.py), needs `views` views for `epochs` epochs and reads `needs` from the teacher (--method
    `method`); return warnings (terms the cache only approximates)."""
    where = f"teacher cache {root}"
    problems = [f"{where} was made with {label} {a}, this run has {b}"
                for label, a, b in differences(manifest.made_from, made_from, manifest.notes, notes or {})]
    record = manifest.record
    if views > record.views:
        problems.append(f"{where} was made with {record.views} view(s) per sample, this run needs {views} "
                        f"(--method {method})")
    if epochs > manifest.epochs:
        problems.append(f"{where} was made for {manifest.epochs} epochs, this run has train.epochs {epochs}")
    if not record.exact:
        for key, t in needs.temperatures.items():
            if float(t) not in record.temperatures:
                problems.append(f"{where} was made with the tail mass at temperatures {record.temperatures} (top "
                                f"{record.topk} of {record.num_classes} classes), this run has {key} {t}")
    if needs.features and not record.feature_dim:
        problems.append(f"{where} was made with teacher.cache_features false, this run needs the teacher's "
                        f"features ({', '.join(needs.features)} in --method {method})")
    _raise_first(problems)
    if record.exact:
        return []
    return [f"{where} keeps the top {record.topk} of {record.num_classes} classes: {term} uses the teacher's logits "
            f"beyond their softmax and is approximate from it (exact with teacher.cache_topk {record.num_classes})"
            for term in needs.approximate_below_all_classes]


def check_continuation(root: str, existing: Manifest, intended: Manifest):
    """A cache pass into a folder that holds a cache (finished or not) must be the same pass: everything
    but the epochs (more epochs extend it) and the batch size (a half-written shard then restarts)."""
    where = f"teacher cache {root}"
    problems = [f"{where} was begun with {label} {a}, this pass has {b}"
                for label, a, b in differences(existing.made_from, intended.made_from, existing.notes, intended.notes)]
    ours, theirs = existing.record, intended.record
    for label, a, b in (("views", ours.views, theirs.views),
                        ("teacher.cache_topk (capped at the classes)", ours.topk, theirs.topk),
                        ("temperatures", ours.temperatures, theirs.temperatures),
                        ("feature dim (0: teacher.cache_features false)", ours.feature_dim, theirs.feature_dim),
                        ("processes", existing.world, intended.world)):
        if a != b:
            problems.append(f"{where} was begun with {label} {a}, this pass has {b}")
    if problems:
        problems[0] += ": continue it with the same settings, or write to a new folder"
    _raise_first(problems)
