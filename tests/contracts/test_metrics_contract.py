"""pipeline/metrics.py's ReaL label table: which classes it accepts (0 .. num_classes - 1, nothing else),
what its error names, and a file whose images have no ReaL labels at all."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import BadInputError
from pipeline.metrics import count_hits, real_label_table

FILES = ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG"]


def table(tmp_path, sets, num_classes):
    path = tmp_path / "real.json"
    path.write_text(json.dumps(sets))
    return real_label_table(str(path), FILES, num_classes)


@pytest.mark.parametrize("sets, message", [
    ([[-1], [], [2]], "classes -1..2 in the labels, but the dataset has 4 classes"),  # -1 is the table's padding
    ([[4], [], [0]], "classes 0..4 in the labels, but the dataset has 4 classes"),
    ([[], [7, 1], []], "classes 1..7 in the labels, but the dataset has 4 classes"),
])
def test_classes_outside_the_dataset_are_an_error_naming_their_range(tmp_path, sets, message):
    with pytest.raises(BadInputError, match=message):
        table(tmp_path, sets, 4)


def test_both_ends_of_the_class_range_are_accepted(tmp_path):
    assert table(tmp_path, [[0], [3, 0], []], 4).tolist() == [[0, -1], [3, 0], [-1, -1]]


def test_images_without_any_real_label_count_nowhere(tmp_path):
    empty = table(tmp_path, [[], [], []], 4)
    assert empty.shape == (3, 1) and (empty == -1).all()  # one padding column: a (3, 0) table is never made
    logits = torch.eye(4)[[1, 2, 3]]
    out = count_hits(logits, torch.tensor([1, 0, 3]), torch.ones(3, dtype=torch.bool), empty)
    assert out.tolist() == [2, 3, 0, 0]  # top-1: rows 0 and 2; top-5 of 4 classes holds every label
