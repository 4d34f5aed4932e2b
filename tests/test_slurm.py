"""launch/slurm/imagenet.sbatch run for real on this machine as two "nodes" (1 CPU process each, gloo,
c10d rendezvous on 127.0.0.1), with srun and scontrol replaced by stand-ins (see slurm_runs.py)."""
from __future__ import annotations

import ast
import re
import signal
import subprocess
import time

import psutil
import pytest

from tests.slurm_runs import (EPOCHS, JOB_ID, SBATCH, STEPS_PER_EPOCH, assert_same_weights, checkpoints,
                              fake_slurm_env, has_checkpoint_after, kill_tree, metrics, reference_run, start,
                              start_sbatch, student_weights, tail, tiny_args, wait_exit, wait_for)


def directive(name: str) -> str:
    return re.search(rf"^#SBATCH --{name}=(\S+)", SBATCH.read_text(), re.M).group(1)


def test_script_is_valid_bash_and_its_stop_timeout_fits_in_the_signal_lead_time():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    assert directive("ntasks-per-node") == "1" and "#SBATCH --requeue" in SBATCH.read_text()
    when, lead = re.fullmatch(r"(B:)?USR1@(\d+)", directive("signal")).groups()
    assert when == "B:"  # to the batch shell, whose trap forwards it (see README)
    stop_timeout = int(re.search(r"STOP_TIMEOUT=\$\{STOP_TIMEOUT:-(\d+)\}", SBATCH.read_text()).group(1))
    # The agent's grace period for the checkpoint must end before Slurm's time limit kills the job.
    assert stop_timeout < int(lead)


def srun_record(tmp_path, **env) -> tuple[list[str], str, list[str]]:
    """Run the script with a recording srun (no training): srun's options, the compile-thread bound its
    tasks inherit, and the command each node would run."""
    log = tmp_path / "job.log"
    job = start_sbatch(tmp_path, ["--train.epochs", "1"], log, FAKE_SRUN_DRY="1", **env)
    assert wait_exit(job, log, timeout=60) == 0, tail(log)
    line = next(ln for ln in (tmp_path / "slurm.log").read_text().splitlines() if ln.startswith("srun options="))
    options, threads, args = re.fullmatch(r"srun options=(.*) compile_threads=(\S+) args=(.*)", line).groups()
    return options.split(), threads, ast.literal_eval(args)


@pytest.mark.parametrize("cpus, gpus, per_rank", [("16", "4", 4), ("64", "8", 8), ("6", "8", 1)])
def test_srun_gets_the_cpus_per_task_and_each_rank_its_share(tmp_path, cpus, gpus, per_rank):
    """Slurm >= 22.05 does not pass sbatch's --cpus-per-task on to srun; each rank gets cpus / GPUs (at least
    1) inductor compile workers and DALI threads / loader workers, the user's own flags still winning."""
    options, threads, args = srun_record(tmp_path, SLURM_CPUS_PER_TASK=cpus, GPUS_PER_NODE=gpus)
    assert f"--cpus-per-task={cpus}" in options
    assert threads == str(per_rank)
    command = args[2]  # bash -c "<command>" bash <the user's arguments>
    assert f"launch/imagenet.py --resume auto --data.workers {per_rank} \"$@\"" in command
    assert args[4:] == ["--train.epochs", "1"]  # after the script's own flags: a user's --data.workers wins


def test_without_cpus_per_task_srun_gets_no_such_option(tmp_path):
    env = {k: v for k, v in fake_slurm_env(tmp_path).items() if k != "SLURM_CPUS_PER_TASK"}
    log = tmp_path / "job.log"
    job = start(["bash", str(SBATCH), "--train.epochs", "1"], {**env, "FAKE_SRUN_DRY": "1"}, log)
    assert wait_exit(job, log, timeout=60) == 0, tail(log)
    line = next(ln for ln in (tmp_path / "slurm.log").read_text().splitlines() if ln.startswith("srun options="))
    assert "--cpus-per-task" not in line and "compile_threads=None" not in line


@pytest.mark.xdist_group("slurm_reference")  # one worker makes the shared uninterrupted run once
@pytest.mark.slow
def test_two_node_launch_trains_to_completion(tmp_path_factory):
    run_dir, done, tmp = reference_run(tmp_path_factory)
    log = tmp / "job.log"
    assert done.returncode == 0, tail(log)
    assert (run_dir / "student.safetensors").is_file()
    tasks = re.findall(r"task node=(\d) pid=\d+", (tmp / "slurm.log").read_text())
    assert tasks == ["0", "1"]  # one launcher per node
    assert checkpoints(run_dir)[-1]["world_size"] == 2  # both nodes joined one job
    evals = metrics(run_dir, "eval")
    assert [m["epoch"] for m in evals] == list(range(1, EPOCHS + 1))
    assert all(m["val_images"] == 40 for m in evals)  # 10 classes x 4, each counted once across nodes
    assert "requeue" not in (tmp / "slurm.log").read_text()
    assert "--cpus-per-task=2" in (tmp / "slurm.log").read_text()  # fake_slurm_env: 2 CPUs, 1 GPU per node
    assert "compile_threads=2 " in (tmp / "slurm.log").read_text()


@pytest.mark.xdist_group("slurm_reference")  # one worker makes the shared uninterrupted run once
@pytest.mark.slow
def test_usr1_to_the_batch_shell_checkpoints_requeues_and_the_requeued_job_resumes_exactly(
        tmp_path, tmp_path_factory):
    reference, _, _ = reference_run(tmp_path_factory)
    run_dir, log = tmp_path / "runs" / "tiny", tmp_path / "job.log"
    job = start_sbatch(tmp_path, tiny_args(tmp_path / "runs"), log)
    wait_for(has_checkpoint_after(run_dir, 2), job, log, timeout=180, what="a mid-epoch checkpoint")
    job.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@...` does before the time limit

    assert wait_exit(job, log, timeout=120) == 0, tail(log)
    slurm_log = (tmp_path / "slurm.log").read_text()
    assert "srun forwards SIGUSR1" in slurm_log and f"requeue {JOB_ID}" in slurm_log
    last = checkpoints(run_dir)[-1]
    assert last["world_size"] == 2 and 0 < last["step_in_epoch"] < STEPS_PER_EPOCH, (
        f"precondition: the stop should land mid-epoch, got {last}")
    assert "stopped by SIGUSR1" in log.read_text()
    assert not (run_dir / "student.safetensors").exists()

    # Slurm starts the same script again for the requeued job: it resumes on its own (--resume auto).
    log2 = tmp_path / "requeued.log"
    requeued = start_sbatch(tmp_path, tiny_args(tmp_path / "runs"), log2, SLURM_RESTART_COUNT="1")
    assert wait_exit(requeued, log2, timeout=240) == 0, tail(log2)
    assert f"resumed from {run_dir}/checkpoints/step-{last['global_step']:09d}" in log2.read_text()
    assert_same_weights(student_weights(run_dir), student_weights(reference))


@pytest.mark.slow
@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["rank-dies", "rank-hangs"])
def test_a_dead_or_hung_rank_takes_every_node_down_within_the_timeout(tmp_path, fault):
    """SIGKILL: the survivor's collective fails at once. SIGSTOP (a hung GPU, a stuck file system): the
    survivor's collective times out after train.dist_timeout_s, its node exits non-zero, and srun
    (--kill-on-bad-exit) removes the hung node. Either way nothing waits forever."""
    timeout_s = 15
    run_dir, log = tmp_path / "runs" / "tiny", tmp_path / "job.log"
    job = start_sbatch(tmp_path, tiny_args(tmp_path / "runs", **{"train.epochs": 100,
                                                                 "train.dist_timeout_s": timeout_s}), log)
    try:
        wait_for(has_checkpoint_after(run_dir, 2), job, log, timeout=180, what="training under way")
        agents = {int(n): int(p) for n, p in re.findall(r"task node=(\d) pid=(\d+)",
                                                        (tmp_path / "slurm.log").read_text())}
        everyone = [psutil.Process(agents[0]), psutil.Process(agents[1])]
        everyone += [c for a in list(everyone) for c in a.children(recursive=True)]
        victim = next(c for c in psutil.Process(agents[1]).children() if "imagenet.py" in " ".join(c.cmdline()))
        start = time.monotonic()
        victim.send_signal(fault)
        code = wait_exit(job, log, timeout=timeout_s + 60)
        elapsed = time.monotonic() - start
        _, alive = psutil.wait_procs(everyone, timeout=10)  # before the clean-up below could hide them
    finally:
        kill_tree(job.pid)
    assert code != 0 and "requeue" not in (tmp_path / "slurm.log").read_text()  # a failure is not requeued
    if fault == signal.SIGKILL:  # a closed connection is noticed at once, no need to wait for the timeout
        assert elapsed < timeout_s, f"took {elapsed:.0f} s"
    else:  # only train.dist_timeout_s can end a wait on a live but silent peer (the default is 600 s)
        assert timeout_s - 5 < elapsed < timeout_s + 30, f"took {elapsed:.0f} s"
    assert not alive, f"left running: {alive}"
