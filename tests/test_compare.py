"""launch/compare.py on a tiny subset (2 methods, 1 seed, a few steps) and launch/plot.py; the demo's baseline."""
import json
import re
import statistics
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_run_args

sys.path.insert(0, str(REPO / "launch"))
import compare  # noqa: E402
import plot  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_aggregate_hand_worked():
    """Mean, sample std and the seed-paired gain over `none`, against numbers worked by hand."""
    results = [{"method": "none", "seed": s, "student_top1": t1, "student_top5": 90.0, "wall_s": 10.0, "views": 1}
               for s, t1 in enumerate([70.0, 72.0, 74.0])]
    results += [{"method": "kd", "seed": s, "student_top1": t1, "student_top5": 95.0, "wall_s": 20.0, "views": 1}
                for s, t1 in enumerate([75.0, 76.0, 80.0])]
    rows = {r["method"]: r for r in compare.aggregate(results, ["none", "kd"])}
    assert rows["none"]["top1"] == pytest.approx((72.0, 2.0))
    assert rows["kd"]["top1"] == pytest.approx((77.0, statistics.stdev([75.0, 76.0, 80.0])))
    # gains per seed: 5, 4, 6 -> mean 5, std 1
    assert rows["kd"]["gain"] == pytest.approx((5.0, 1.0))
    assert rows["kd"]["wall_s"] == 20.0


def test_compare_tiny_then_reuse(tmp_path, tiny_teacher, monkeypatch, capsys):
    out = tmp_path / "cmp"
    argv = ["--methods", "none,kd", "--seeds", "1", "--out", str(out)] + tiny_run_args(out, tiny_teacher)
    first = compare.main(argv)
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["seed"]) for r in lines] == [("none", 0), ("kd", 0)]
    for r in lines:
        assert 0 <= r["student_top1"] <= r["student_top5"] <= 100
        assert (Path(r["run_dir"]) / "summary.json").is_file()
        assert (Path(r["run_dir"]) / "student.safetensors").is_file()
    kd = lines[1]
    assert kd["teacher_top1"] is not None and lines[0]["teacher_top1"] is None  # `none` has no teacher
    table = (out / "results.md").read_text()
    gain = kd["student_top1"] - lines[0]["student_top1"]
    assert f"| kd | 1 | {kd['student_top1']:.2f} +- 0.00 |" in table
    assert f"{gain:+.2f} +- 0.00" in table
    assert f"| teacher (resnet10t) | - | {kd['teacher_top1']:.2f} |" in table
    for name in ("top1.png", "val_top1.png", "curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and 5_000 < len(data) < 200_000, name
    progress = capsys.readouterr().out
    assert "[compare 1/2] none seed 0: training" in progress and "[compare 2/2] kd seed 0: top-1" in progress

    # A second invocation reuses both finished runs: building a Trainer would be an error.
    import pipeline.trainer

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(pipeline.trainer, "Trainer", no_training)
    second = compare.main(argv)
    assert [r["student_top1"] for r in second["results"]] == [r["student_top1"] for r in first["results"]]
    assert "[compare 2/2] kd seed 0: reusing" in capsys.readouterr().out


def test_plot_cli_overlays_runs(tmp_path, capsys):
    """Two hand-written metrics.jsonl files: every loss term, lr, images/s and top-1 give a PNG."""
    dirs = []
    for name, scale in (("a", 1.0), ("b", 2.0)):
        d = tmp_path / name
        d.mkdir()
        recs = [{"kind": "train", "step": s, "lr": 0.1, "images_per_s": 100.0, "loss": 3 * scale / s,
                 "loss/ce": scale / s, "loss/kd": 2 * scale / s} for s in range(1, 6)]
        recs += [{"kind": "eval", "epoch": e, "student_top1": 50.0 + e} for e in (1, 2)]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{torn")
        dirs.append(str(d))
    assert plot.eval_curve(plot.read_metrics(dirs[0])) == ([1, 2], [51.0, 52.0])
    plot.main(dirs + ["--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        plot.main([str(tmp_path / "missing"), "--out", str(tmp_path / "d.png")])


def test_compare_from_one_teacher_cache(tmp_path, tiny_teacher, capsys, monkeypatch):
    """--teacher-cache auto: one pass into OUT/teacher-cache with what the methods need, kd reads it, every run
    gets its aug_seed; given as a path to a second comparison, a method it cannot serve (icd needs features
    the first pass had no reason to store) trains live, saying why."""
    for name in ("plot_top1", "plot_val_per_epoch"):  # the plots are tested above; here they only cost time
        monkeypatch.setattr(compare, name, lambda *a: None)
    monkeypatch.setattr(plot, "plot_runs", lambda *a, **k: None)
    out = tmp_path / "nested" / "cmp"  # --out's parents are made too
    flags = tiny_run_args(out, tiny_teacher, **{"data.aug_seed": -1, "data.per_class": 8, "train.batch_size": 8,
                                                "train.steps_per_epoch": 2, "train.eval_every": 2})
    start = time.time()
    compare.main(["--methods", "none,kd", "--seeds", "1", "--out", str(out), "--teacher-cache", "auto"] + flags)
    manifest = json.loads((out / "teacher-cache" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["record"]["feature_dim"] == 0 and manifest["record"]["views"] == 1
    assert manifest["made_from"]["data.aug_seed"] == 0 and manifest["epochs"] == 2
    lines = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert lines["kd"]["teacher_source"] == "cache" and lines["none"]["teacher_source"] is None
    for method in ("none", "kd"):
        config = (Path(lines[method]["run_dir"]) / "config.yaml").read_text()
        assert "aug_seed: 0" in config and ("teacher-cache" in config) == (method == "kd")
    assert "Teacher outputs from the cache" in (out / "results.md").read_text()
    printed = capsys.readouterr().out
    assert "live teacher" not in printed  # the cache served kd: no reason to print
    trained = re.search(r"\[compare 2/2\] kd seed 0: top-1 .*, \d+ s; (\d+) s elapsed", printed)
    assert trained and int(trained.group(1)) <= time.time() - start + 1  # since the comparison began; not reused

    compare.main(["--methods", "kd,icd+kd", "--seeds", "1", "--out", str(out),
                  "--teacher-cache", str(out / "teacher-cache")] + flags)
    printed = capsys.readouterr().out
    assert "[compare 1/2] kd seed 0: reusing" in printed
    assert re.search(r"\[compare 1/2\] kd seed 0: top-1 .*, \d+ s \(reused\); \d+ s elapsed", printed)
    assert "] kd seed 0: live teacher" not in printed
    assert "icd+kd seed 0: live teacher: the cache cannot serve it (teacher cache" in printed
    assert "teacher.cache_features false" in printed
    lines = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert lines["icd+kd"]["teacher_source"].startswith("live: teacher cache")
    assert "Live teacher for: icd+kd (" in (out / "results.md").read_text()


def test_variants_train_with_their_flags_and_report_under_their_names(tmp_path, monkeypatch):
    """`--variant NAME=FLAGS` rows: each run's config has the variant's flags on top of the common ones, the
    rows are named after the variants, and the EMA's top-1 is reported beside the student's (no training:
    a stand-in Trainer returns a summary computed from the config it was given)."""
    from types import SimpleNamespace

    import pipeline.trainer

    configs = []

    class StandIn:
        def __init__(self, cfg, resume=""):
            configs.append(cfg)
            self.cfg, self.accelerator = cfg, SimpleNamespace(is_main_process=True)
            (Path(cfg.train.output_dir) / cfg.train.name).mkdir(parents=True)

        def fit(self):
            c = self.cfg
            ema = {"ema_top1": 60.0 + c.train.seed} if c.ema.decay else {}
            return {"method": c.method, "student_top1": 40.0 + 10 * c.augment.mixup_alpha + c.train.seed,
                    "student_top5": 90.0, "teacher_top1": None, "teacher_top5": None, "wall_s": 1.0,
                    "epochs": c.train.epochs, **ema}

    tables = []

    def table_only(results, methods, seeds, cfg, out):  # the plots need real runs' metrics
        tables.append(compare.markdown(compare.aggregate(results, methods), None, cfg, seeds))
        (out / "results.md").write_text(tables[-1])
        return {}

    monkeypatch.setattr(pipeline.trainer, "Trainer", StandIn)
    monkeypatch.setattr(compare, "write_outputs", table_only)
    argv = ["--seeds", "2", "--out", str(tmp_path), "--variant", "plain=--method kd",
            "--variant", "mixed=--method kd --augment.mixup_alpha 0.5 --ema.decay 0.9", "--train.epochs", "3",
            "--variant", "bare=--augment.mixup_alpha 0.2",  # no --method: the comparison's (the default, kd)
            "--teacher.train_if_missing", "false"]
    compare.main(argv)
    assert [(c.train.name, c.method, c.augment.mixup_alpha, c.ema.decay, c.train.epochs) for c in configs] == [
        ("plain-seed0", "kd", 0.0, 0.0, 3), ("mixed-seed0", "kd", 0.5, 0.9, 3), ("bare-seed0", "kd", 0.2, 0.0, 3),
        ("plain-seed1", "kd", 0.0, 0.0, 3), ("mixed-seed1", "kd", 0.5, 0.9, 3), ("bare-seed1", "kd", 0.2, 0.0, 3)]
    table = tables[-1]
    assert "| plain | 2 | 40.50 +- 0.71 |" in table  # seeds 0, 1: 40, 41
    assert "| mixed | 2 | 45.50 +- 0.71; ema 60.50 |" in table
    assert "| bare | 2 | 42.50 +- 0.71 |" in table  # seeds 0, 1: 42, 43
    with pytest.raises(SystemExit, match="NAME=FLAGS"):
        compare.main(["--variant", "no flags", "--out", str(tmp_path)])


def test_a_teacher_cache_that_is_not_there_is_one_line(tmp_path, tiny_teacher):
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as e:
        compare.main(["--methods", "kd", "--seeds", "1", "--out", str(out), "--teacher-cache", str(tmp_path / "nowhere")]
                     + tiny_run_args(out, tiny_teacher))
    assert str(e.value).startswith("error: ") and "nowhere" in str(e.value) and "\n" not in str(e.value)


def test_the_curves_plot_shows_the_first_seeds_runs(tmp_path, monkeypatch):
    """write_outputs: curves.png overlays the runs of the first seed, one per method, titled with that seed."""
    from pipeline.config import Config

    calls = []
    monkeypatch.setattr(compare, "plot_top1", lambda *a: None)
    monkeypatch.setattr(compare, "plot_val_per_epoch", lambda *a: None)
    monkeypatch.setattr(plot, "plot_runs", lambda dirs, out, **k: calls.append((dirs, k)))
    results = [{"method": m, "seed": s, "run_dir": f"{m}-{s}", "student_top1": 50.0 + s, "student_top5": 90.0,
                "teacher_top1": None, "wall_s": 1.0, "views": 1} for s in (3, 4) for m in ("kd", "none")]
    compare.write_outputs(results, ["kd", "none"], [3, 4], Config(), tmp_path)
    assert calls == [(["kd-3", "none-3"], {"labels": ["kd", "none"], "title": "seed 3"})]
