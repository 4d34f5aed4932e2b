"""The demo's student-alone baseline: trained once with --method none, cached beside the teacher, printed
beside the teacher and the distilled student."""
import json
import sys

import pytest

from pipeline.baseline import baseline_cache_path, what_distillation_buys
from pipeline.config import parse_args
from tests.conftest import REPO, tiny_run_args

sys.path.insert(0, str(REPO / "launch"))
import imagenet  # noqa: E402


def test_cache_key_follows_what_decides_the_result(tmp_path):
    teacher = tmp_path / "t" / "teacher.safetensors"
    base = tiny_run_args(tmp_path / "a", teacher)
    path = baseline_cache_path(parse_args(base)[0])
    assert path.parent == teacher.parent and path.name.startswith("student-alone-resnet10t-")
    # outputs, logging and the distillation method do not change what the student alone learns
    same = base + ["--train.output_dir", str(tmp_path / "b"), "--train.log_every", "7", "--method", "icd+kd",
                   "--kd.temperature", "2"]
    assert baseline_cache_path(parse_args(same)[0]) == path
    for flag, value in (("--train.epochs", "3"), ("--train.seed", "1"), ("--data.per_class", "8"),
                        ("--student.arch", "resnet18")):
        assert baseline_cache_path(parse_args(base + [flag, value])[0]) != path, flag


def test_report_hand_worked():
    cfg, _ = parse_args(["--method", "kd"])
    text = what_distillation_buys(cfg, {"student_top1": 70.0, "student_top5": 95.0},
                                  {"student_top1": 74.5, "student_top5": 97.25, "teacher_top1": 88.0,
                                   "val_images": 2000})
    assert f"teacher {cfg.teacher.arch}" in text and "88.00 / -" in text
    assert "70.00 / 95.00" in text
    assert "distilled (--method kd)" in text and "74.50 / 97.25" in text
    assert "+4.50 points" in text


def test_demo_prints_teacher_alone_and_distilled(tmp_path, tiny_teacher, monkeypatch, capsys):
    teacher = tmp_path / "teachers" / "t.safetensors"
    teacher.parent.mkdir()
    teacher.write_bytes(tiny_teacher.read_bytes())
    argv = tiny_run_args(tmp_path / "runs", teacher, **{"train.baseline": "true", "train.epochs": 1}) + ["--method", "kd"]
    imagenet.main(argv)
    out = capsys.readouterr().out
    cached = json.loads(baseline_cache_path(parse_args(argv)[0]).read_text())
    summaries = [json.loads(line[8:]) for line in out.splitlines() if line.startswith("SUMMARY ")]
    assert [s["method"] for s in summaries] == ["none", "kd"]  # the baseline first, then the distilled run
    distilled = summaries[-1]
    assert cached["method"] == "none" and distilled["method"] == "kd"
    assert f"{cached['student_top1']:.2f} / {cached['student_top5']:.2f}" in out
    assert f"{distilled['student_top1']:.2f} / {distilled['student_top5']:.2f}" in out
    assert f"{distilled['student_top1'] - cached['student_top1']:+.2f} points" in out

    # A second run reuses the cached baseline: only the distilled run trains.
    import pipeline.trainer
    built = []
    real = pipeline.trainer.Trainer
    monkeypatch.setattr(imagenet, "Trainer", lambda cfg, **kw: built.append(cfg.method) or real(cfg, **kw))
    monkeypatch.setattr(pipeline.trainer, "Trainer", lambda cfg, **kw: pytest.fail("the baseline was retrained"))
    imagenet.main(argv + ["--train.name", "again"])
    assert built == ["kd"]


def test_cache_key_follows_the_batch_the_processes_get(tmp_path):
    """The key holds the batch per process (BatchNorm) and the global batch (lr, steps) the run will have."""
    base = parse_args(tiny_run_args(tmp_path, tmp_path / "t.safetensors", **{"train.batch_size": 16}))[0]
    one, two = baseline_cache_path(base, processes=1), baseline_cache_path(base, processes=2)
    assert one != two  # 16 per process: a global 16 or 32
    fixed = parse_args(tiny_run_args(tmp_path, tmp_path / "t.safetensors", **{"train.global_batch_size": 32}))[0]
    other = parse_args(tiny_run_args(tmp_path, tmp_path / "t.safetensors", **{"train.global_batch_size": 32,
                                                                             "train.batch_size": 7}))[0]
    assert baseline_cache_path(fixed, 2) == baseline_cache_path(other, 2) == two  # batch_size unused; 16 x 2 = 32
    assert baseline_cache_path(fixed, 1) != baseline_cache_path(fixed, 2)  # 32 in one process, 16 in each of two
