"""A real 2-process CPU run (gloo DDP) of the trainer: shared gradients, falling loss, checkpoint,
resume from the saved step, and exact distributed evaluation."""
import json

import pytest
import torch

from pipeline import checkpoint
from tests.conftest import accelerate_launch, made_once, tiny_run_args

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def two_process_run(tmp_path_factory, tiny_teacher, demo_root):
    """2 processes of 16 images per step (global 32), 2 epochs of 5 steps of KD, then a resumed launch for a
    third epoch (made once per session: tests/conftest.made_once)."""
    def make(out):
        args = tiny_run_args(out / "runs", tiny_teacher, **{"method": "kd", "train.lr": 0.4, "data.per_class": 32,
                                                            "train.batch_size": 16, "train.steps_per_epoch": 5})
        first = accelerate_launch(["tests/helpers/ddp_probe.py", str(out / "first")] + args)
        saved = [checkpoint.read_trainer_state(p) for p in checkpoint.list_checkpoints(out / "runs" / "run")]
        resumed = accelerate_launch(["tests/helpers/ddp_probe.py", str(out / "resumed")] + args
                                    + ["--resume", "auto", "--train.epochs", "3"])
        (out / "saved.json").write_text(json.dumps(saved))
        (out / "first.log").write_text(first.stdout + first.stderr)
        (out / "resumed.log").write_text(resumed.stdout + resumed.stderr)
    out = made_once(tmp_path_factory, "ddp", make)
    return {"out": out, "run_dir": out / "runs" / "run", "saved": json.loads((out / "saved.json").read_text()),
            "first_log": (out / "first.log").read_text(), "resumed_log": (out / "resumed.log").read_text(),
            "first": [torch.load(out / "first" / f"rank{r}.pt", weights_only=False) for r in (0, 1)],
            "resumed": [torch.load(out / "resumed" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]}


def metrics(run_dir, kind):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["kind"] == kind]


def test_two_processes_see_different_data_but_share_gradients(two_process_run):
    rank0, rank1 = two_process_run["first"]
    assert (rank0["world"], rank1["world"]) == (2, 2), "not one 2-process job (two independent runs?)"
    assert {rank0["rank"], rank1["rank"]} == {0, 1}
    assert not set(rank0["first_index"].tolist()) & set(rank1["first_index"].tolist()), "ranks read the same samples"
    assert rank0["first_index"].shape == rank1["first_index"].shape == (16,)  # train.batch_size is per process
    # Different batches on each rank yet identical weights after 10 optimizer steps: only possible when
    # every step applies the same all-reduced gradient.
    for name, w0 in rank0["weights"].items():
        if "running" in name or "num_batches" in name:
            continue  # BN buffers are rank-local between evaluations
        assert torch.equal(w0, rank1["weights"][name]), f"{name} differs between ranks"


def test_training_loss_falls(two_process_run):
    # The cross-entropy term: KD towards a random stand-in teacher starts at ~0 and need not fall.
    ce = [m["loss/ce"] for m in metrics(two_process_run["run_dir"], "train") if m["step"] <= 10]
    assert len(ce) == 10
    first, last = sum(ce[:3]) / 3, sum(ce[-3:]) / 3
    assert last < 0.9 * first, f"cross-entropy did not fall: {first:.3f} -> {last:.3f}"


def test_checkpoint_written_each_epoch(two_process_run):
    steps = [s["global_step"] for s in two_process_run["saved"]]
    assert steps == [5, 10], steps
    for path in checkpoint.list_checkpoints(two_process_run["run_dir"]):
        assert checkpoint.is_complete(path)
        assert (path / "model.safetensors").is_file() and (path / "optimizer.bin").is_file()
        assert (path / "random_states_0.pkl").is_file() and (path / "random_states_1.pkl").is_file()


def test_resume_continues_from_the_saved_step(two_process_run):
    assert "resumed from" in two_process_run["resumed_log"]
    steps = [m["step"] for m in metrics(two_process_run["run_dir"], "train")]
    assert steps == list(range(1, 16)), steps  # 10 steps, then the resumed epoch's 11..15: none repeated
    evals = metrics(two_process_run["run_dir"], "eval")
    assert [m["epoch"] for m in evals] == [1, 2, 3]
    assert two_process_run["resumed"][0]["summary"]["epochs"] == 3


def test_distributed_evaluation_counts_each_image_once(two_process_run):
    # 30 validation images over 2 ranks x 16 per batch: padding on every rank, masked out of the counts.
    rank0 = two_process_run["resumed"][0]
    top1, total = rank0["single_process_top1"]
    last_eval = metrics(two_process_run["run_dir"], "eval")[-1]
    assert last_eval["val_images"] == total == 30
    assert last_eval["student_top1"] == pytest.approx(top1, abs=1e-9)
