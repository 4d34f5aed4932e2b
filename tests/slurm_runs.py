"""Multi-process runs for the Slurm and preemption tests: stand-ins for srun/scontrol, the tiny run's
arguments, starting the real sbatch script or `accelerate launch`, waiting, cleaning up.

Each launch costs ~20-30 s of imports on 2 cores, so the uninterrupted reference run is made once per
session and shared by every test that compares a resumed run with it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

from pipeline import checkpoint

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SBATCH = REPO / "launch" / "slurm" / "imagenet.sbatch"
JOB_ID = "4242"
STEPS_PER_EPOCH = 6
EPOCHS = 2

# srun: record its options, the compile-thread bound and the command (FAKE_SRUN_DRY: and stop there); start the
# command once per "node" (each in its own session, like a task on another machine) with
# that node's SLURM_* variables; forward the signals real srun forwards to the task; a TERM sent to srun
# itself becomes SIGKILL of the tasks, as in real srun ("forcing job termination"); with
# --kill-on-bad-exit=1, a task exiting non-zero gets every other task killed with all its processes.
FAKE_SRUN = """#!{python}
import os, signal, subprocess, sys, time
import psutil
args = sys.argv[1:]
options = []
while args and args[0].startswith("-"):  # srun options (the script uses the --opt=value form)
    options.append(args.pop(0))
with open(os.environ["FAKE_SLURM_LOG"], "a") as f:  # what the tests check of the step's start
    f.write(f"srun options={{' '.join(options)}} compile_threads={{os.environ.get('TORCHINDUCTOR_COMPILE_THREADS')}} "
            f"args={{args!r}}\\n")
if os.environ.get("FAKE_SRUN_DRY"):  # record only: start nothing
    sys.exit(0)
procs = []
for node in range(int(os.environ["SLURM_JOB_NUM_NODES"])):
    env = dict(os.environ, SLURM_NODEID=str(node), SLURM_PROCID=str(node), SLURM_LOCALID="0")
    procs.append(subprocess.Popen(args, env=env, start_new_session=True))
    with open(os.environ["FAKE_SLURM_LOG"], "a") as f:
        f.write(f"task node={{node}} pid={{procs[-1].pid}}\\n")
def forward(signum, frame):
    with open(os.environ["FAKE_SLURM_LOG"], "a") as f:
        f.write(f"srun forwards {{signal.Signals(signum).name}}\\n")
    for p in procs:
        p.send_signal(signum)
def kill_all():
    for p in procs:
        try:
            tree = psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]
        except psutil.NoSuchProcess:
            continue
        for q in tree:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass
def force_termination(signum, frame):
    kill_all()
for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
    signal.signal(s, forward)
signal.signal(signal.SIGTERM, force_termination)
while any(p.poll() is None for p in procs):
    if "--kill-on-bad-exit=1" in options and any(p.poll() for p in procs):
        kill_all()
    time.sleep(0.2)
codes = [p.wait() for p in procs]
bad = [c for c in codes if c]
sys.exit((bad[0] if bad[0] > 0 else 128 - bad[0]) if bad else 0)
"""

# scontrol: the node list of the allocation (two "nodes", both this machine) and a recorded requeue.
FAKE_SCONTROL = """#!{python}
import os, sys
if sys.argv[1:3] == ["show", "hostnames"]:
    print("127.0.0.1\\nlocalhost")
elif sys.argv[1:2] == ["requeue"]:
    with open(os.environ["FAKE_SLURM_LOG"], "a") as f:
        f.write("requeue " + " ".join(sys.argv[2:]) + "\\n")
else:
    sys.exit("fake scontrol: unsupported " + " ".join(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_args(output_dir: Path, name: str = "tiny", **overrides) -> list[str]:
    """A 2-epoch run of 6 steps per epoch on the demo data, mid-epoch checkpoints every 2 steps; a global batch
    of 8 on 1 or 2 processes (in-process and launched runs see the same samples per step)."""
    values = {"method": "none", "student.arch": "resnet10t", "data.backend": "torch", "data.workers": 0,
              "data.per_class": 8, "data.val_per_class": 4, "train.global_batch_size": 8,
              "train.steps_per_epoch": STEPS_PER_EPOCH, "train.epochs": EPOCHS, "train.checkpoint_every": 2,
              "train.keep_checkpoints": 3, "train.log_every": 1, "train.eval_every": 1,
              "train.output_dir": str(output_dir),
              "train.name": name, **overrides}
    return [x for k, v in values.items() for x in (f"--{k}", str(v))]


def base_env() -> dict:
    # An explicit CPU choice (pipeline/device.py): without it a multi-process run with no CUDA is an error.
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", ACCELERATE_USE_CPU="1")
    env.pop("SLURM_JOB_ID", None)
    return env


def fake_slurm_env(tmp: Path, nodes: int = 2) -> dict:
    """Environment of a batch script in a `nodes`-node allocation, with the stand-ins first on PATH."""
    bin_dir = tmp / "fake-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    return dict(base_env(), PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SLURM_LOG=str(tmp / "slurm.log"),
                SLURM_JOB_ID=JOB_ID, SLURM_JOB_NUM_NODES=str(nodes), SLURM_JOB_NODELIST="node[1-2]",
                SLURM_SUBMIT_DIR=str(REPO), GPUS_PER_NODE="1", SLURM_CPUS_PER_TASK="2", MASTER_PORT=str(free_port()),
                ACCELERATE=str(VENV_BIN / "accelerate"), STOP_TIMEOUT="60")


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def start_sbatch(tmp: Path, args: list[str], log: Path, **env) -> subprocess.Popen:
    return start(["bash", str(SBATCH), *args], {**fake_slurm_env(tmp), **env}, log)


def start_accelerate(args: list[str], log: Path, processes: int = 2, env: dict | None = None) -> subprocess.Popen:
    cmd = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines", "1",
           "--num_processes", str(processes), "--main_process_port", str(free_port()), "--monitor_interval", "1",
           str(REPO / "launch" / "imagenet.py"), *args]
    return start(cmd, {**base_env(), **(env or {})}, log)


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def wait_exit(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        raise AssertionError(f"still running after {timeout:.0f} s; log tail:\n{tail(log)}") from None


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}; log tail:\n{tail(log)}")
        if time.monotonic() > deadline:
            kill_tree(proc.pid)
            raise AssertionError(f"no {what} after {timeout:.0f} s; log tail:\n{tail(log)}")
        time.sleep(0.05)


def kill_tree(pid: int):
    """SIGKILL a process and all its descendants (agents and workers run in sessions of their own)."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def checkpoints(run_dir: Path) -> list[dict]:
    """trainer_state.json of every complete checkpoint, oldest first (polled while the run prunes old ones)."""
    states = []
    for path in reversed(checkpoint.complete_checkpoints(run_dir, warn=False)):
        try:
            states.append(checkpoint.read_trainer_state(path))
        except OSError:  # pruned between listing and reading
            pass
    return states


def has_checkpoint_after(run_dir: Path, global_step: int):
    return lambda: any(s["global_step"] >= global_step for s in checkpoints(run_dir))


def student_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "student.safetensors"))


def assert_same_weights(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def metrics(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def reference_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, Path]:
    """The uninterrupted run (two fake nodes x 1 process, via the sbatch script), made once per session
    whichever xdist worker asks first (tests/conftest.made_once)."""
    from tests.conftest import made_once

    def make(tmp):
        log = tmp / "job.log"
        proc = start_sbatch(tmp, tiny_args(tmp / "runs"), log)
        (tmp / "exit_code").write_text(str(wait_exit(proc, log, timeout=240)))
    tmp = made_once(tmp_path_factory, "slurm_reference", make)
    code = int((tmp / "exit_code").read_text())
    return tmp / "runs" / "tiny", subprocess.CompletedProcess(["sbatch", str(SBATCH)], code), tmp
