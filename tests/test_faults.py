"""The fault soak's short version: three faults (an ENOSPC while a checkpoint is written, SIGKILL of one
rank, a truncated newest checkpoint) in one 2-process run, each resumed with `--resume auto`, ending
with exactly the uninterrupted run's weights. The torch loader (its resume is exact; bench/faults.py
--backend dali soaks the default loader). `python bench/faults.py --faults 50` is the full soak.
"""
from __future__ import annotations

import sys

import pytest

from tests.slurm_runs import EPOCHS, REPO, STEPS_PER_EPOCH, reference_run, tail, tiny_args

sys.path.insert(0, str(REPO))
from bench.faults import Fault, compare, soak  # noqa: E402

EVERY = 2  # tiny_args' train.checkpoint_every


@pytest.mark.slow  # ~2 min: CI runs it (-m slow); bench/faults.py is the full soak
@pytest.mark.xdist_group("slurm_reference")  # one worker makes the shared uninterrupted run once
def test_three_faults_are_survived_and_the_final_weights_equal_the_uninterrupted_run(tmp_path, tmp_path_factory):
    reference, _, _ = reference_run(tmp_path_factory)  # shared with the preemption tests
    run_dir, logs = tmp_path / "runs" / "tiny", tmp_path / "logs"
    faults = [Fault("disk_full", delay=EVERY + 1, rank=1), Fault("kill_one", delay=EVERY + 1, rank=0),
              Fault("truncate", delay=0, rank=0)]
    records, launches = soak(tiny_args(tmp_path / "runs", **{"train.dist_timeout_s": 30}), run_dir, faults, logs,
                             launch_timeout=300)
    logs_tail = "\n".join(tail(p) for p in sorted(logs.glob("launch-*.log")))
    assert [r["kind"] for r in records] == ["disk_full", "kill_one", "truncate"], (records, logs_tail)
    assert len(launches) == 3 and launches[-1]["finished"] and launches[-1]["rc"] == 0, (launches, logs_tail)
    assert all(r["survived"] for r in records), records
    full, kill, cut = records
    # ENOSPC at the first checkpoint after step 3 (step 4): the run fails, saying why; step 2's is resumed.
    launch0 = (logs / "launch-000.log").read_text()
    assert (full["fault_step"], full["resumed_after"], full["redone"]) == (2 * EVERY, EVERY, EVERY), records
    assert "CheckpointWriteError" in launch0 and "is full" in launch0, tail(logs / "launch-000.log")
    # SIGKILL of rank 0 from step 5 on: at most one checkpoint interval is redone.
    assert kill["fault_step"] >= 5 and 0 <= kill["redone"] <= EVERY, records
    # The cut checkpoint is skipped with a warning and the one before it resumed.
    launch2 = (logs / "launch-002.log").read_text()
    assert f"skipping incomplete checkpoint {run_dir}/checkpoints/step-{cut['fault_step']:09d}" in launch2
    assert 0 < cut["resumed_after"] < cut["fault_step"], records
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # no debris of the failed write is left
    result = compare(run_dir, reference)
    assert result["student_equal"] and result["checkpoint_equal"] and result["history_equal"], result
    assert result["same_final_step"] and (run_dir / "checkpoints" / f"step-{EPOCHS * STEPS_PER_EPOCH:09d}").is_dir()
