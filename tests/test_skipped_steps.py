"""A skipped (non-finite) step leaves every parameter and buffer as it was, bitwise, and the run goes on
exactly as a run that never took that step: for kd, icd+kd, dccd, crd+kd and slkd, in one process and in
two (a real `accelerate launch`). Faults on the last process only: a NaN pixel at step 1 (a NaN loss that
poisons BatchNorm statistics, CRD's banks and Z in the forward) and a +inf in one gradient element at
step 4 (a finite loss); the losses are read every 3 steps, so both are found by the deferred read.
What is compared and how: bench/skipped_step.py."""
from __future__ import annotations

import json

import pytest

from bench.skipped_step import INF_STEP, NAN_STEP, check_skipped_steps
from tests.conftest import accelerate_launch, made_once, tiny_run_args

METHODS = ["kd", "icd+kd", "dccd", "crd+kd", "slkd"]
STEPS = 6
# Buffers every step's forward moves, which the restore must have put back after a skipped one: some of
# each network that runs in train mode, and CRD's state.
MOVED = {"kd": ["student.model.bn1.running_mean"], "icd+kd": ["student.model.bn1.running_var"],
         "dccd": ["methods.2.transform.1.running_mean", "student.model.layer1.0.bn1.num_batches_tracked"],
         "crd+kd": ["methods.0.bank_s", "methods.0.bank_t", "methods.0.draws"],
         "slkd": ["methods.0.sl1.model.bn1.running_mean", "methods.0.sl2.model.bn1.running_var"]}


def flags(tmp_path, teacher) -> list[str]:
    return tiny_run_args(tmp_path / "runs", teacher, **{
        "data.per_class": 6, "data.val_per_class": 1, "data.image_size": 16, "data.val_resize": 16,
        "train.batch_size": 4, "train.steps_per_epoch": STEPS, "train.log_every": 3, "crd.nce_k": 64,
        "train.sched": "cosine"})  # the lr changes every step: run B must follow the step count too


@pytest.fixture(scope="session")
def one_process(tmp_path_factory, tiny_teacher, demo_root) -> list[dict]:
    def make(folder):
        (folder / "rank0.json").write_text(json.dumps(check_skipped_steps(flags(folder, tiny_teacher), METHODS)))
    return [json.loads((made_once(tmp_path_factory, "skipped_steps_1", make) / "rank0.json").read_text())]


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory, tiny_teacher, demo_root) -> list[dict]:
    def make(folder):
        accelerate_launch(["bench/skipped_step.py", str(folder / "records"), "--", *flags(folder, tiny_teacher)])
    folder = made_once(tmp_path_factory, "skipped_steps_2", make)
    return [json.loads((folder / "records" / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("processes", ["one_process", pytest.param("two_processes", marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", METHODS)
def test_a_skipped_step_leaves_every_parameter_and_buffer_as_it_was(request, processes, method):
    ranks = request.getfixturevalue(processes)
    assert [r[method]["world"] for r in ranks] == [len(ranks)] * len(ranks)
    for rank in ranks:
        record = rank[method]
        assert (record["steps"], record["skipped_steps"]) == (STEPS, 2)  # both faults found and skipped
        assert record["compared"] > 100  # every parameter, buffer and optimizer tensor, not a sample
        for step in (NAN_STEP, INF_STEP):
            assert record[f"after_{step}"] == [], f"step {step} changed {record[f'after_{step}']}"
            assert record[f"nonfinite_after_{step}"] == []
        # The forwards did move the buffers (so an absent restore would show above), on every process.
        for step in (NAN_STEP, INF_STEP):
            moved = set(record[f"changed_by_forward_{step}"])
            assert {f"distiller.{n}" for n in MOVED[method]} <= moved, (step, sorted(moved)[:10])
        if method == "crd+kd":  # Z is set by the first step only: the skipped first step must not set it
            assert "distiller.methods.0.z" in record[f"changed_by_forward_{NAN_STEP}"]


@pytest.mark.parametrize("processes", ["one_process", pytest.param("two_processes", marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", METHODS)
def test_the_run_continues_as_one_that_never_took_the_skipped_steps(request, processes, method):
    for rank in request.getfixturevalue(processes):
        record = rank[method]
        assert (record["b_steps"], record["b_skipped_steps"]) == (STEPS, 0)
        assert record["end_differs_from_run_without_the_steps"] == []
