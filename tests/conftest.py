"""Shared fixtures: the demo data, a tiny teacher checkpoint, a 2-process `accelerate launch` runner, and
`made_once` for an expensive run that several xdist workers' tests read."""
import fcntl
import os

# Before anything imports triton: @triton.jit (triton's own tl.* helpers included) picks compiled or
# interpreted mode at decoration time, and the kernel tests run the kernels on CPU tensors through the
# interpreter. Set once for the whole session, as any test directory may import triton first (e.g.
# through torch or DALI). GPU build tests compile in a subprocess with the variable removed.
os.environ["TRITON_INTERPRET"] = "1"
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """The Trainer installs SIGUSR1/SIGTERM handlers; every test gives pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def demo_root():
    from pipeline.data.demo import prepare_demo_data

    return prepare_demo_data(".data/fashion_mnist_jpeg")


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A randomly initialised resnet10t saved as safetensors: a stand-in teacher that loads like a real one."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("teacher") / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=10).state_dict(), str(path))
    return path


def tiny_run_args(output_dir, teacher_path, **overrides):
    """CLI flags for a few-step run on a small subset of the demo data."""
    flags = {"data.backend": "torch", "data.per_class": 16, "data.val_per_class": 3, "data.workers": 0,
             "train.batch_size": 16, "train.steps_per_epoch": 4, "train.epochs": 2, "train.log_every": 1,
             "train.eval_every": 1, "train.output_dir": str(output_dir), "train.name": "run", "train.warmup_epochs": 0, "train.sched": "step",
             "teacher.arch": "resnet10t", "teacher.checkpoint": str(teacher_path), "train.baseline": False,
             "teacher.train_if_missing": False, "student.arch": "resnet10t", "train.compile": "off"}
    flags.update(overrides)
    return [a for k, v in flags.items() for a in (f"--{k}", str(v))]


def accelerate_launch(script_args, processes=2, timeout=600, env=None):
    """A real multi-process CPU launch (gloo). `--cpu` would start ONE process, so use --multi_gpu;
    the Trainer asks for Accelerator(cpu=True) when CUDA is absent."""
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_machines", "1", "--num_processes", str(processes),
           "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"] + script_args
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"launch failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A folder `make(folder)` filled once per test session, whichever xdist worker asks first (the others
    wait on a file lock, then read it). xdist's `xdist_group` cannot do this here: under pytest 9 its group
    suffix no longer reaches the test ids, so a group's tests are spread over the workers."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by the session's workers
    folder = root / f"made-once-{name}"
    with open(root / f"made-once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "DONE").is_file():
            folder.mkdir(exist_ok=True)
            make(folder)
            (folder / "DONE").write_text("")
    return folder
