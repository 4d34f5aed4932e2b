"""launch/compare.py's derived figures, every cell of its markdown table against a hand count (values chosen
so that each cell differs: a swapped column, a per-seed pairing lost or a views factor dropped shows), and
launch/plot.py's readers of metrics.jsonl."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from pipeline.config import Config, apply

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "launch"))
import compare  # noqa: E402
import plot  # noqa: E402


def run(method, seed, top1, top5, wall, views=1, **extra):
    return {"method": method, "seed": seed, "student_top1": top1, "student_top5": top5, "wall_s": wall,
            "views": views, "teacher_top1": None, "teacher_top5": None, **extra}


RESULTS = [
    run("none", 0, 60.0, 80.0, 10.0), run("none", 1, 62.0, 84.0, 14.0), run("none", 2, 64.0, 85.0, 12.0),
    run("kd", 0, 66.0, 88.0, 20.0, teacher_top1=77.25, teacher_top5=93.5),
    run("kd", 2, 71.0, 90.0, 30.0, teacher_top1=77.25, teacher_top5=93.5),  # seed 1 missing: gains pair by seed
    run("dkd+kd", 1, 61.5, 83.25, 40.0, views=2),
    run("slkd", 0, 63.0, 82.0, 50.0, sl1_top1=55.0, sl2_top1=57.0),
]


def test_every_cell_of_the_table():
    cfg = apply(Config(), {"teacher": {"arch": "resnet34"}, "student": {"arch": "resnet18"},
                           "train": {"epochs": 7, "batch_size": 48}}, "test")
    rows = compare.aggregate(RESULTS, ["none", "kd", "dkd+kd", "slkd", "crd"])
    assert [r["method"] for r in rows] == ["none", "kd", "dkd+kd", "slkd"]  # crd: no finished run, no row
    text = compare.markdown(rows, compare.teacher_row(RESULTS), cfg, [0, 1, 2])
    lines = text.splitlines()
    assert lines[0].startswith("teacher resnet34 -> student resnet18, 7 epochs, seeds 0, 1, 2;")
    assert lines[2:] == [
        "| method | seeds | top-1 | top-5 | gain over none | wall s per run | images per step |",
        "|---|---|---|---|---|---|---|",
        "| teacher (resnet34) | - | 77.25 | 93.50 | - | - | - |",
        # 60, 62, 64 -> 62 +- 2; 80, 84, 85 -> 83 +- sqrt(7); walls 10, 14, 12 -> 12
        "| none (student alone) | 3 | 62.00 +- 2.00 | 83.00 +- 2.65 | - | 12 | 48 |",
        # 66, 71 -> 68.5 +- 3.54; 88, 90 -> 89 +- 1.41; gains 66-60, 71-64 -> 6.5 +- 0.71; walls 20, 30
        "| kd | 2 | 68.50 +- 3.54 | 89.00 +- 1.41 | +6.50 +- 0.71 | 25 | 48 |",
        # one seed (1): 61.5 - 62 = -0.5; two views of each of the 48 images per step
        "| dkd+kd | 1 | 61.50 +- 0.00 | 83.25 +- 0.00 | -0.50 +- 0.00 | 40 | 96 |",
        "| slkd | 1 | 63.00 +- 0.00; sl1 55.00; sl2 57.00 | 82.00 +- 0.00 | +3.00 +- 0.00 | 50 | 48 |",
    ]


def test_teacher_row_and_run_naming():
    assert compare.teacher_row(RESULTS) == (77.25, 93.5)
    assert compare.teacher_row([run("none", 0, 1.0, 2.0, 3.0)]) is None
    top1_only = compare.teacher_row([run("kd", 0, 1.0, 2.0, 3.0, teacher_top1=50.0)])
    assert top1_only[0] == 50.0 and math.isnan(top1_only[1])
    assert compare.run_name("icd+kd", 2) == "icd_kd-seed2"
    assert [compare.views(m) for m in ("kd", "icd+kd", "dkd+kd", "dccd", "none")] == [1, 1, 2, 2, 1]
    assert compare.mean_std([3.0]) == (3.0, 0.0) and compare.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))


def test_gain_is_none_without_a_paired_baseline():
    rows = compare.aggregate([run("kd", 5, 70.0, 90.0, 1.0), run("none", 4, 60.0, 80.0, 1.0)], ["kd", "none"])
    assert rows[0]["gain"] is None and rows[1]["gain"] == (0.0, 0.0)


def test_plot_readers(tmp_path):
    records = [{"kind": "train", "step": 1, "loss": 2.0, "lr": 0.1}, {"kind": "eval", "epoch": 0, "student_top1": 10.0},
               {"kind": "train", "step": 2, "loss": float("nan"), "lr": 0.2},
               {"kind": "train", "step": 3, "loss": 1.5, "lr": 0.3}, {"kind": "eval", "epoch": 1, "student_top1": 20.0},
               {"kind": "eval", "epoch": 0, "student_top1": 15.0},  # a resumed run repeats epoch 0: the last wins
               {"kind": "eval", "epoch": 2, "student_top1": None}]
    text = "\n".join(json.dumps(r) for r in records) + '\n{"kind": "train", "st'  # torn last line
    (tmp_path / "metrics.jsonl").write_text(text)
    got = plot.read_metrics(tmp_path)
    assert len(got) == len(records)
    assert plot.eval_curve(got) == ([0, 1], [15.0, 20.0])
    assert plot.train_series(got, "loss") == ([1, 3], [2.0, 1.5])  # the NaN step is left out
    assert plot.train_series(got, "lr") == ([1, 2, 3], [0.1, 0.2, 0.3])
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        plot.read_metrics(tmp_path / "absent")
