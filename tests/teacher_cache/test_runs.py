"""The cache pass and runs from its cache, end to end (equality_runner.py: the pass, then live, rounded,
cached, learning and resumed runs), per loader, process count and views:

- the pass stores the teacher's outputs on exactly the views the train loader cuts, every sample, every epoch;
- a cached run's loss terms equal the live run's to fp16's rounding of the stored values (tolerance below),
  and the live run's with its teacher's outputs rounded as a record stores them to fp32 noise;
- a cached run resumed mid-epoch equals the uninterrupted cached run bitwise;
- a cached run builds no teacher and reports the teacher accuracy the pass measured.

One run of kd+dkd+icd+ccd+crd (two views) computes every term of kd, dkd+kd, icd+kd, ccd+kd and crd+kd on the
same views, each by its own method module; kd+icd+crd covers one view. The default run has the 1-process
DALI run (and test_mixed_cache.py a 1-process torchvision one); the two-process launches are `slow`.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import parse_args
from pipeline.teacher_cache.encode import encode_records
from pipeline.teacher_cache.loader_hooks import cache_pass_loaders
from pipeline.teacher_cache.reader import CacheReader
from tests.conftest import REPO, accelerate_launch, made_once, tiny_run_args

RUNNER = Path(__file__).with_name("equality_runner.py")
FIVE = "kd+dkd+icd+ccd+crd"
ONE_VIEW = "kd+icd+crd"
# fp16's unit roundoff: each stored value (relative logit, feature) is within 2^-11 of the teacher's, relative.
# A loss term averages many such values over a batch, so its own relative change stays below that
# (measured: at most 0.2x of it, dkd's differences of logits between views being the largest).
FP16 = 2.0 ** -11
FP32_NOISE = 1e-6  # the teacher run on other batches (the pass's) than the live run's: fp32 rounding
CONFIGS = {
    "torch-2proc-2views": dict(backend="torch", processes=2, views=2, method=FIVE),
    "dali-1proc-1view": dict(backend="dali", processes=1, views=1, method=ONE_VIEW),
    "torch-1proc-1view": dict(backend="torch", processes=1, views=1, method=ONE_VIEW),
    "dali-2proc-2views": dict(backend="dali", processes=2, views=2, method=FIVE),
}
SLOW = {"torch-1proc-1view", "torch-2proc-2views", "dali-2proc-2views"}  # the default run keeps DALI, one process


def flags(out: Path, teacher: Path, backend: str) -> list[str]:
    return tiny_run_args(out / "unused", teacher, **{
        "data.backend": backend, "data.per_class": 8, "train.batch_size": 8, "train.steps_per_epoch": 2,
        "train.eval_every": 2, "crd.nce_k": 256})


@pytest.fixture(scope="module", params=[pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else [])
                                        for c in CONFIGS])
def runs(request, tmp_path_factory, tiny_teacher, demo_root):
    name, config = request.param, CONFIGS[request.param]

    def make(out):
        args = [str(out), str(config["views"]), config["method"], "--", *flags(out, tiny_teacher, config["backend"])]
        if config["processes"] == 1:  # in this process: no launch
            spec = importlib.util.spec_from_file_location("equality_runner", RUNNER)
            runner = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(runner)
            runner.run_all(out, config["views"], config["method"], args[4:])
        else:
            accelerate_launch([str(RUNNER), *args], processes=config["processes"])
    out = made_once(tmp_path_factory, f"cache-{name}", make)
    return out, config, tiny_teacher


def terms(out: Path, run: str, rank: int) -> list[dict]:
    return json.loads((out / f"terms-{run}-rank{rank}.json").read_text())


def metrics(out: Path, run: str, kind: str) -> list[dict]:
    lines = (out / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == kind]


def test_the_pass_stores_the_teacher_on_the_views_the_train_loader_cuts(runs):
    """Every sample, both epochs: the records equal the teacher (as the pass runs it) re-run here on the
    train loader's own batches of that epoch, to fp16 rounding."""
    out, config, teacher = runs
    manifest = json.loads((out / "cache" / "manifest.json").read_text())
    world = config["processes"]
    assert manifest["complete"] and manifest["world"] == world and len(manifest["shards"]) == 2 * world
    assert manifest["samples"] == 80 and manifest["record"]["views"] == config["views"]
    assert manifest["teacher_val"]["images"] == 30 and 0 <= manifest["teacher_val"]["top1"] <= 100
    cache_teacher = importlib.util.spec_from_file_location("cache_teacher", REPO / "launch" / "cache_teacher.py")
    module = importlib.util.module_from_spec(cache_teacher)
    cache_teacher.loader.exec_module(module)
    cfg, _ = parse_args(flags(out, teacher, config["backend"]))
    _, run_teacher = module.build_teacher(cfg, 10, torch.device("cpu"))
    reader = CacheReader(out / "cache")
    train, _ = cache_pass_loaders(cfg, batch_size=16, views=config["views"], rank=0, world=1,
                                  device=torch.device("cpu"))
    train.set_plan("train")  # the run's own plan: other batches than the pass's
    seen = set()
    for epoch in range(2):
        train.set_epoch(epoch)
        for batch in train:
            with torch.no_grad():
                logits, features = run_teacher(batch["images"])
            expected = encode_records(logits, features, config["views"], 10, [])
            got = reader.records(epoch, batch["index"].numpy(), config["views"])
            assert np.array_equal(got["classes"], expected["classes"])
            for field in ("values", "features"):
                a, b = got[field].astype(np.float64), expected[field].astype(np.float64)
                assert np.abs(a - b).max() <= FP16 * np.abs(b).max(), (epoch, field)
            seen.update(batch["index"].tolist())
    assert len(seen) == 80


@pytest.mark.parametrize("reference, tolerance", [("live", FP16), ("rounded", FP32_NOISE)])
def test_cached_run_gives_the_live_runs_loss_terms(runs, reference, tolerance):
    """Every step of both epochs, every rank, every term (the student frozen: lr 1e-30)."""
    out, config, _ = runs
    for rank in range(config["processes"]):
        cached, expected = terms(out, "cached", rank), terms(out, reference, rank)
        assert len(cached) == len(expected) == 4
        assert set(cached[0]) == {"ce", *config["method"].split("+")}
        for step, (a, b) in enumerate(zip(cached, expected)):
            for term in b:
                assert abs(a[term] - b[term]) <= tolerance * abs(b[term]), (rank, step, term, a[term], b[term])
    # the terms are not all the same number: every step reads other samples' records
    assert len({round(t["kd"], 6) for t in terms(out, "cached", 0)}) == 4


def test_resumed_cached_run_equals_the_uninterrupted_one_bitwise(runs):
    out, config, _ = runs
    for rank in range(config["processes"]):
        learning, resumed = terms(out, "learning", rank), terms(out, "resumed", rank)
        assert len(learning) == 4 and resumed == learning[3:]  # resumed after global step 3 (epoch 2, step 1)
        assert learning[3]["kd"] != terms(out, "cached", rank)[3]["kd"]  # this student learnt (lr > 0)
    a = load_file(str(out / "runs" / "learning" / "student.safetensors"))
    b = load_file(str(out / "runs" / "resumed" / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cached_run_builds_no_teacher_and_reports_the_passes_teacher_accuracy(runs):
    out, _, _ = runs
    assert json.loads((out / "cached-built.json").read_text()) == {"teacher": False, "teacher_fn": False}
    live, cached = metrics(out, "live", "eval")[-1], metrics(out, "cached", "eval")[-1]
    manifest = json.loads((out / "cache" / "manifest.json").read_text())
    # the live run evaluated the teacher itself on the same 30 images
    assert cached["teacher_top1"] == live["teacher_top1"] == manifest["teacher_val"]["top1"]
    assert cached["teacher_top5"] == live["teacher_top5"]
