"""Each method trains through `accelerate launch` with 2 CPU processes (DDP over gloo) and the stateful
ones resume from their checkpoint with the method's state (tau, b, memory banks, Z, SL teachers and
their optimizer state) restored. One launch runs them all: see e2e_runner.py."""
import json
import math
from pathlib import Path

import pytest

from tests.conftest import accelerate_launch, made_once, tiny_run_args

METHODS = ["kd", "icd", "icd+kd", "ccd+kd", "dkd+kd", "dccd", "slkd", "crd+kd"]
RESUMED = ["icd", "crd+kd", "slkd"]
RUNNER = str(Path(__file__).with_name("e2e_runner.py"))
# Parts of each method's state that must change in training (so "restored" is not "re-initialised").
TRAINED = {"icd": ["methods.0.log_scale", "methods.0.head_s.weight"],
           "crd+kd": ["methods.0.bank_s", "methods.0.bank_t", "methods.0.z", "methods.0.embed_t.weight"],
           "slkd": ["methods.0.sl1.model.fc.weight", "methods.0.sl2.model.conv1.0.weight",
                    "methods.0.sl1.model.bn1.running_mean"]}


@pytest.fixture(scope="session")
def runs(tmp_path_factory, tiny_teacher):
    def make(out):
        flags = tiny_run_args(out / "runs", tiny_teacher, **{
            "data.per_class": 8, "data.val_per_class": 4, "train.batch_size": 4, "train.steps_per_epoch": 3,
            "train.epochs": 1})
        accelerate_launch([RUNNER, str(out / "records"), ",".join(METHODS), ",".join(RESUMED), "--"] + flags,
                          timeout=900)
    out = made_once(tmp_path_factory, "e2e", make)  # one launch per session, whichever worker asks first
    ranks = [json.loads((out / "records" / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, out / "runs"


def metrics(run_dir: Path, kind: str) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["kind"] == kind]


@pytest.mark.e2e
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_on_two_processes(runs, method):
    ranks, run_root = runs
    summary = ranks[0][method]["summary"]
    assert summary["method"] == method and summary["val_images"] == 40
    for key in ("student_top1", "student_top5", "teacher_top1"):  # whole images out of 40, each counted once
        hits = summary[key] * 40 / 100
        assert 0 <= hits <= 40 and abs(hits - round(hits)) < 1e-6, (key, summary[key])
    assert summary["student_top5"] >= summary["student_top1"]
    train = metrics(run_root / method.replace("+", "_"), "train")[:3]  # the first run (resumed ones go on)
    assert [m["step"] for m in train] == [1, 2, 3]
    terms = {k[len("loss/"):] for k in train[-1] if k.startswith("loss/")}
    expected = {"kd": {"kd"}, "icd": {"icd"}, "ccd": {"ccd"}, "dkd": {"dkd"}, "crd": {"crd"},
                "slkd": {"slkd_teacher", "slkd_sl", "sl1", "sl2"}}
    for part in {"kd", "dkd", "ccd"} if method == "dccd" else method.split("+"):
        assert expected[part] <= terms, (part, terms)
    assert all(math.isfinite(m[f"loss/{t}"]) for m in train for t in terms)
    # The processes agree on everything the methods own (DDP-averaged parameters, gathered bank updates).
    assert ranks[0][method]["state"] == ranks[1][method]["state"]
    if method == "slkd":
        assert {"sl1_top1", "sl2_top1"} <= set(summary)


@pytest.mark.e2e
@pytest.mark.parametrize("method", RESUMED)
def test_method_state_survives_resume(runs, method):
    ranks, run_root = runs
    resume = ranks[0][method]["resume"]
    assert resume["checkpoint"] == "step-000000003" and resume["start"] == [1, 3]
    assert resume["keys"] and resume["loaded_equals_checkpoint"] == resume["keys"]
    assert set(TRAINED[method]) <= set(resume["checkpoint_differs_from_init"])
    assert resume["optimizer_states"] == resume["parameters"]  # momentum of every parameter, SL teachers' too
    assert resume["summary"]["epochs"] == 2
    evals = metrics(run_root / method.replace("+", "_"), "eval")
    assert [m["epoch"] for m in evals] == [1, 2]
    assert [m["step"] for m in metrics(run_root / method.replace("+", "_"), "train")] == [1, 2, 3, 4, 5, 6]
    assert ranks[0][method]["resume"]["state"] == ranks[1][method]["resume"]["state"]
