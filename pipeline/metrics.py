"""Validation counts: top-1, top-5 and ImageNet-ReaL top-1 hits, over valid (non-padding) samples only.

ImageNet-ReaL (Beyer et al., "Are we done with ImageNet?", 2020) relabels the 50,000 ILSVRC-2012 val
images with sets of plausible classes; a prediction is right when it is in the set, and images whose set
is empty are left out. timm ships the labels (timm/data/_info/imagenet_real_labels.json: list entry n is
the set of `ILSVRC2012_val_{n+1:08d}.JPEG`); `data.real_labels` turns the metric on.
"""
from __future__ import annotations

import json
import pkgutil
import re
from pathlib import Path

import torch

from pipeline.errors import BadInputError, MissingInputError

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def load_real_labels(spec: str) -> list[list[int]]:
    """'timm': the copy shipped with timm; otherwise a real.json path (a list of class lists)."""
    if spec == "timm":
        return json.loads(pkgutil.get_data("timm.data", "_info/imagenet_real_labels.json"))
    path = Path(spec)
    if not path.is_file():
        raise MissingInputError(f"data.real_labels: file not found: {path} (or 'timm' for the labels timm ships)")
    try:
        labels = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"data.real_labels: cannot read {path}: {e}") from None
    if not (isinstance(labels, list) and all(isinstance(s, list) for s in labels)):
        raise BadInputError(f"data.real_labels: {path} must hold a list of class lists, one per val image")
    return labels


def real_label_table(spec: str, files: list[str], num_classes: int) -> torch.Tensor:
    """(N, K) int64: the ReaL classes of val sample i (found by its file name), padded with -1."""
    labels = load_real_labels(spec)
    rows = []
    for f in files:
        match = VAL_NAME.fullmatch(Path(f).name)
        if not match or not 0 < int(match.group(1)) <= len(labels):
            raise BadInputError(f"data.real_labels: {f} is not an ImageNet val image name "
                                f"(ILSVRC2012_val_00000001.JPEG .. {len(labels):08d}): set data.real_labels ''")
        rows.append(labels[int(match.group(1)) - 1])
    classes = [c for row in rows for c in row]
    if classes and not 0 <= min(classes) <= max(classes) < num_classes:
        raise BadInputError(f"data.real_labels: classes {min(classes)}..{max(classes)} in the labels, "
                            f"but the dataset has {num_classes} classes")
    table = torch.full((len(rows), max(1, max(len(r) for r in rows))), -1, dtype=torch.int64)
    for i, row in enumerate(rows):
        table[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
    return table


def count_hits(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
               real: torch.Tensor | None = None) -> torch.Tensor:
    """(top-1 hits, top-5 hits, ReaL top-1 hits, images with ReaL labels) among the valid rows."""
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit = top5 == labels[:, None]
    out = torch.stack([(hit[:, 0] & valid).sum(), (hit.any(dim=1) & valid).sum(),
                       torch.zeros((), dtype=torch.int64, device=logits.device),
                       torch.zeros((), dtype=torch.int64, device=logits.device)])
    if real is not None:
        has_real = (real >= 0).any(dim=1) & valid
        out[2] = ((real == top5[:, :1]).any(dim=1) & has_real).sum()
        out[3] = has_real.sum()
    return out
