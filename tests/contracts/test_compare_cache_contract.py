"""launch/compare_cache.py without a teacher pass: the cache pass's flags for a set of methods (most views,
every temperature, features when a method needs them), and each run's flags (the cache's aug_seed; the
cache itself only for a run it serves; the method read from the config when no flag names it)."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import parse_args

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "launch"))
import compare_cache  # noqa: E402


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_the_pass_serves_every_method_of_the_comparison(tmp_path):
    config_argv = ["--kd.temperature", "2", "--dkd.temperature", "3"]
    cfg = parse_args(config_argv)[0]
    argv = compare_cache.pass_argv(cfg, config_argv, ["none", "kd", "dkd+kd"], tmp_path / "c", 5)
    assert argv[:4] == config_argv and flag(argv, "--teacher.cache") == str(tmp_path / "c")
    assert flag(argv, "--views") == "2"  # dkd's two views; `none` has no teacher and no say
    assert flag(argv, "--temperatures") == "2.0,3.0" and flag(argv, "--data.aug_seed") == "5"
    assert flag(argv, "--teacher.cache_features") == "false" and flag(argv, "--epochs") == str(cfg.train.epochs)

    argv = compare_cache.pass_argv(cfg, config_argv, ["kd", "crd"], tmp_path / "c", 0)
    assert flag(argv, "--teacher.cache_features") == "true" and flag(argv, "--views") == "1"
    assert flag(argv, "--temperatures") == "2.0"

    argv = compare_cache.pass_argv(cfg, config_argv, ["crd"], tmp_path / "c", 0)  # no temperature at all
    assert "--temperatures" not in argv and flag(argv, "--teacher.cache_features") == "true"


def test_each_run_gets_the_caches_aug_seed_and_the_cache_only_where_it_serves(tmp_path):
    sweep = compare_cache.SweepCache(tmp_path / "c", aug_seed=7, sources={"kd": "cache", "crd": "live: no features"})
    assert compare_cache.run_argv(None, [], "kd", ["--method", "kd"], []) == []
    assert compare_cache.run_argv(sweep, [], "none", ["--method", "none"], []) == ["--data.aug_seed", "7"]
    assert compare_cache.run_argv(sweep, [], "kd", ["--method", "kd"], []) == \
        ["--data.aug_seed", "7", "--teacher.cache", str(tmp_path / "c")]
    assert compare_cache.run_argv(sweep, [], "crd", ["--method", "crd"], []) == ["--data.aug_seed", "7"]
    # a variant row names no --method: the method is the config's (kd by default), which the cache serves
    sweep.sources["ema"] = "cache"
    assert parse_args([])[0].method == "kd"
    assert compare_cache.run_argv(sweep, [], "ema", ["--ema.decay", "0.99"], []) == \
        ["--data.aug_seed", "7", "--teacher.cache", str(tmp_path / "c")]
