"""A teacher cache made with consistent mixup / CutMix (and RandAugment): the pass stores the teacher's
outputs on the mixed images the student sees, so a cached run's loss terms equal the live run's (fp16
rounding), for another train.seed too (the mates, lambda and box follow data.aug_seed alone); a run whose
augmentation differs is refused naming both sides."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pipeline.config import parse_args
from pipeline.errors import BadInputError
from pipeline.teacher_cache.use import check_for_run
from pipeline.data import dataset_root, dataset_sources
from tests.conftest import tiny_run_args

RUNNER = Path(__file__).with_name("equality_runner.py")
FP16 = 2.0 ** -11
MIXING = {"augment.mixup_alpha": 0.8, "augment.cutmix_alpha": 1.0, "augment.switch_prob": 0.5,
          "augment.randaug_ops": 1, "augment.randaug_magnitude": 9}


def runner():
    spec = importlib.util.spec_from_file_location("equality_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cache_made_with_mixing_serves_mixed_runs_of_any_seed(tmp_path, tiny_teacher):
    eq = runner()
    flags = tiny_run_args(tmp_path / "unused", tiny_teacher, **{
        "data.per_class": 8, "train.batch_size": 8, "train.steps_per_epoch": 2, "train.epochs": 1,
        "train.eval_every": 1, "data.aug_seed": 3, **MIXING})
    cache = str(tmp_path / "cache")
    eq.cache_teacher_module().main(flags + ["--teacher.cache", cache, "--teacher.cache_topk", "1000",
                                            "--views", "1", "--batch-size", "16", "--method", "kd"])
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["made_from"]["augment.mixup_alpha"] == 0.8 and manifest["made_from"]["augment.randaug_ops"] == 1
    frozen = flags + ["--method", "kd", "--train.output_dir", str(tmp_path / "runs"), "--train.lr", "1e-30"]
    for seed in (0, 1):  # the cache was made once; train.seed 1 batches the samples otherwise
        seeded = frozen + ["--train.seed", str(seed)]
        live = eq.run(tmp_path, f"live{seed}", eq.Recording, seeded).recorded
        cached = eq.run(tmp_path, f"cached{seed}", eq.Recording, seeded + ["--teacher.cache", cache]).recorded
        assert len(live) == len(cached) == 2
        for a, b in zip(cached, live):
            assert abs(a["kd"] - b["kd"]) <= FP16 * abs(b["kd"]), (seed, a, b)
            assert abs(a["ce"] - b["ce"]) <= 1e-6 * abs(b["ce"])  # the same mixed labels
    # a cache without the mixing would give other terms: the mixing reached the teacher in the pass
    plain = eq.run(tmp_path, "plain", eq.Recording, frozen + ["--augment.mixup_alpha", "0", "--augment.cutmix_alpha",
                                                               "0", "--augment.randaug_ops", "0"]).recorded
    assert all(abs(a["kd"] - b["kd"]) > 1e-3 * abs(b["kd"]) for a, b in zip(plain, live))


@pytest.mark.parametrize("key, value", [("augment.mixup_alpha", "0.2"), ("augment.randaug_ops", "0")])
def test_a_run_with_other_augmentation_is_refused_naming_both(tmp_path, tiny_teacher, key, value):
    from cache_fixtures import make_manifest, write_cache
    from pipeline.teacher_cache.identity import data_identity
    from pipeline.teacher_cache.loader_hooks import train_listing
    from pipeline.teacher_cache.use import run_teacher_identity

    base = tiny_run_args(tmp_path / "runs", tiny_teacher, **{"data.aug_seed": 3, **MIXING})
    cfg, _ = parse_args(base)
    names, labels, classes = train_listing(dataset_sources(cfg.data, dataset_root(cfg.data))[0])
    made_from = {**run_teacher_identity(cfg, classes), **data_identity(cfg, names, labels, classes)}
    manifest = make_manifest(samples=len(names), epochs=2, world=1, views=1, topk=classes, classes=classes,
                             temperatures=(), feature_dim=0, batch_size=16, **made_from)
    write_cache(tmp_path / "cache", manifest)
    cfg, _ = parse_args(base + ["--teacher.cache", str(tmp_path / "cache"), "--method", "kd", f"--{key}", value])
    with pytest.raises(BadInputError) as e:
        check_for_run(cfg, dataset_sources(cfg.data, dataset_root(cfg.data))[0], 1)
    cached = MIXING[key]
    assert f"was made with {key} {cached}, this run has {type(cached)(float(value))}" in str(e.value)


def test_compare_serves_a_variant_from_the_cache_only_when_its_flags_match(tmp_path, tiny_teacher):
    """launch/compare.py's rows by name: a variant whose flags change the augmentation trains live (the reason
    kept under its name), a plain row reads the cache, a row without a teacher only takes the aug_seed."""
    import sys

    from cache_fixtures import make_manifest, write_cache
    from pipeline.teacher_cache.identity import data_identity
    from pipeline.teacher_cache.loader_hooks import train_listing
    from pipeline.teacher_cache.use import run_teacher_identity
    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "launch"))
    import compare_cache

    base = tiny_run_args(tmp_path / "runs", tiny_teacher, **{"data.aug_seed": 3})
    cfg, _ = parse_args(base)
    names, labels, classes = train_listing(dataset_sources(cfg.data, dataset_root(cfg.data))[0])
    made_from = {**run_teacher_identity(cfg, classes), **data_identity(cfg, names, labels, classes)}
    write_cache(tmp_path / "cache", make_manifest(samples=len(names), epochs=2, world=1, views=1, topk=classes,
                                                  classes=classes, temperatures=(), feature_dim=0, batch_size=16,
                                                  **made_from))
    sweep = compare_cache.SweepCache(tmp_path / "cache", aug_seed=3)
    seed = ["--train.seed", "1"]
    mixed = compare_cache.run_argv(sweep, base, "kd_mix", ["--method", "kd", "--augment.mixup_alpha", "0.8"], seed)
    plain = compare_cache.run_argv(sweep, base, "kd", ["--method", "kd"], seed)
    alone = compare_cache.run_argv(sweep, base, "none_row", ["--method", "none"], seed)
    assert mixed == alone == ["--data.aug_seed", "3"]
    assert plain == ["--data.aug_seed", "3", "--teacher.cache", str(tmp_path / "cache")]
    assert sweep.sources["kd"] == "cache" and "none_row" not in sweep.sources
    assert sweep.sources["kd_mix"].startswith("live: ") and "augment.mixup_alpha 0.0, this run has 0.8" in \
        sweep.sources["kd_mix"]
