"""Fault soak: a 2-process run (gloo, the demo at small size) takes N faults at seeded random steps and
resumes with `--resume auto` after each; the final weights are compared with an uninterrupted run's.

    python bench/faults.py --faults 50 --backend torch

Fault kinds: `kill_one` (SIGKILL one rank; the launcher's agent tears down the other), `term_all`
(SIGTERM to every rank, as at preemption), `usr1_one` (SIGUSR1 to one rank, Slurm's warning before the
time limit), `disk_full` (ENOSPC on one rank while a checkpoint is written, injected by a sitecustomize
on PYTHONPATH for that launch only: production code has no hook) fire `delay` steps after the step the
launch resumed from; `truncate` cuts the largest file of the newest complete checkpoint in half between
two launches (after the previous fault). "Steps redone" is the global step at the fault (for
`truncate`: of the checkpoint cut) minus the step the next launch resumed from. Prints a table per kind
and one JSON line (`FAULTS {...}`).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script and importable by tests

from bench.common import REPO, load_average, markdown_table  # noqa: E402

import psutil  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pipeline import checkpoint  # noqa: E402
from tests.slurm_runs import kill_tree, start_accelerate, tail, tiny_args  # noqa: E402

KINDS = ("kill_one", "term_all", "usr1_one", "disk_full", "truncate")

# Written to <work>/hook/sitecustomize.py; PYTHONPATH names it only for a `disk_full` launch.
ENOSPC_HOOK = '''import os
if os.environ.get("FAULTS_ENOSPC"):  # "<first global step>:<rank>": fail that rank's first save_state at or after the step
    import errno, re
    from pathlib import Path
    import accelerate
    _step, _rank = map(int, os.environ["FAULTS_ENOSPC"].split(":"))
    _save_state = accelerate.Accelerator.save_state
    def save_state(self, output_dir=None, *args, **kwargs):
        m = re.search(r"step-(\\d+)$", str(output_dir))
        if m and int(m.group(1)) >= _step and self.process_index == _rank:
            Path(output_dir, "partial.bin").write_bytes(bytes(4096))  # a write cut short by the full disk
            raise OSError(errno.ENOSPC, "No space left on device (injected by bench/faults.py)", str(output_dir))
        return _save_state(self, output_dir, *args, **kwargs)
    accelerate.Accelerator.save_state = save_state
'''


@dataclass
class Fault:
    kind: str
    delay: int  # steps after the launch's resume step
    rank: int  # the rank signalled / failing (kill_one, usr1_one, disk_full)


def plan(n: int, seed: int, max_delay: int, kinds=KINDS) -> list[Fault]:
    """Kinds in shuffled rounds (as many of each as possible), delays and ranks drawn from `seed`."""
    rng = random.Random(seed)
    order = []
    while len(order) < n:
        order += rng.sample(list(kinds), len(kinds))
    return [Fault(kind, rng.randint(1, max_delay), rng.randint(0, 1)) for kind in order[:n]]


def latest_step(run_dir: Path) -> int:
    found = checkpoint.complete_checkpoints(run_dir, warn=False)
    return checkpoint.read_trainer_state(found[0])["global_step"] if found else 0


def logged_steps(run_dir: Path, offset: int) -> list[int]:
    """Train steps in metrics.jsonl after byte `offset` (rank 0 logs each step; a line cut by SIGKILL is skipped)."""
    try:
        with open(run_dir / "metrics.jsonl", "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    steps = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "train":
            steps.append(record["step"])
    return steps


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def resumed_step(log: Path) -> int | None:
    text = log.read_text(errors="replace")
    m = re.search(r"resumed from \S*step-(\d+) at epoch", text)
    if m:
        return int(m.group(1))
    return 0 if "starting fresh" in text else None


def workers(launcher: psutil.Popen) -> dict[int, psutil.Process]:
    found = {}
    for p in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if "imagenet.py" in " ".join(p.cmdline()) and "RANK" in p.environ():
                found[int(p.environ()["RANK"])] = p
        except psutil.NoSuchProcess:
            pass
    return found


def signal_ranks(launcher, ranks, sig):
    procs = workers(launcher)
    for r in ranks:
        if r in procs:
            try:
                procs[r].send_signal(sig)
            except psutil.NoSuchProcess:
                pass


def truncate_newest(run_dir: Path) -> str:
    """Cut the largest file of the newest complete checkpoint in half (a copy interrupted, a bad block)."""
    path = checkpoint.find_latest(run_dir)
    if path is None:
        return ""
    victim = max((f for f in path.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    return str(victim.relative_to(run_dir))


def launch(args: list[str], run_dir: Path, log: Path, fault: Fault | None, work: Path, timeout: float) -> dict:
    """One `--resume auto` launch, with `fault` injected `fault.delay` steps after its resume step."""
    start_step, offset, t0 = latest_step(run_dir), size(run_dir / "metrics.jsonl"), time.time()
    env = {}
    if fault and fault.kind == "disk_full":
        hook = work / "hook"
        hook.mkdir(parents=True, exist_ok=True)
        (hook / "sitecustomize.py").write_text(ENOSPC_HOOK)
        env = {"PYTHONPATH": f"{hook}:{REPO}", "FAULTS_ENOSPC": f"{start_step + fault.delay}:{fault.rank}"}
    proc = start_accelerate(args + ["--resume", "auto"], log, env=env)
    injected = fault is not None and fault.kind == "disk_full"
    deadline = t0 + timeout
    while proc.poll() is None and time.time() < deadline:
        if fault and not injected:
            steps = logged_steps(run_dir, offset)
            if steps and steps[-1] >= start_step + fault.delay:
                if fault.kind == "kill_one":
                    signal_ranks(proc, [fault.rank], signal.SIGKILL)
                elif fault.kind == "usr1_one":
                    signal_ranks(proc, [fault.rank], signal.SIGUSR1)
                else:  # term_all
                    signal_ranks(proc, [0, 1], signal.SIGTERM)
                injected = True
        time.sleep(0.05)
    hung = proc.poll() is None
    if hung:
        kill_tree(proc.pid)
    steps = logged_steps(run_dir, offset)
    record = {"rc": proc.wait(), "hung": hung, "resumed_from": resumed_step(log), "last_step": max(steps, default=None),
              "finished": (run_dir / "student.safetensors").exists(), "wall_s": round(time.time() - t0, 1)}
    if fault and fault.kind == "disk_full":
        injected = "injected by bench/faults.py" in log.read_text(errors="replace")
    record["injected"] = injected
    return record


def soak(args: list[str], run_dir: Path, faults: list[Fault], work: Path, launch_timeout: float = 600,
         max_crashes: int = 3, deadline: float = math.inf) -> tuple[list[dict], list[dict]]:
    """Launch, inject, relaunch until the run finishes; past `deadline` (time.time()) no fault is injected
    any more, so one last launch finishes the run and the weights can still be compared.
    Returns (one record per fault, every launch); each launch is also appended to <work>/launches.jsonl."""
    work.mkdir(parents=True, exist_ok=True)
    pending, launches, records, crashes = list(faults), [], [], 0
    while True:
        if pending and time.time() >= deadline:
            print(f"[faults] time box reached: {len(pending)} faults not injected; finishing the run", file=sys.stderr)
            pending.clear()
        if pending and pending[0].kind == "truncate":  # between runs, before the next launch
            newest = latest_step(run_dir)
            if newest:
                for r in records:  # a fault not yet resumed from would have resumed from the checkpoint now cut
                    if r["launch"] + (r["kind"] != "truncate") == len(launches):
                        r.setdefault("resume_point", newest)
                records.append({**asdict(pending.pop(0)), "launch": len(launches), "fault_step": newest,
                                "truncated": truncate_newest(run_dir)})
            else:  # nothing to cut yet: after the next fault of another kind (dropped if none is left)
                cut = pending.pop(0)
                other = next((i for i, f in enumerate(pending) if f.kind != "truncate"), None)
                if other is not None:
                    pending.insert(other + 1, cut)
            continue
        fault = pending[0] if pending else None
        rec = launch(args, run_dir, work / f"launch-{len(launches):03d}.log", fault, work, launch_timeout)
        rec["fault"] = asdict(fault) if fault and rec["injected"] else None
        launches.append(rec)
        with open(work / "launches.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if rec["injected"]:
            pending.pop(0)
            records.append({**asdict(fault), "launch": len(launches) - 1, "rc": rec["rc"], "hung": rec["hung"],
                            "fault_step": rec["last_step"] or 0})
        if rec["finished"]:
            break
        if not rec["injected"]:
            crashes += 1  # stopped without an injected fault: resume again, a few times, and report it
            if crashes > max_crashes:
                break
    return judge(records, launches), launches


def judge(records: list[dict], launches: list[dict]) -> list[dict]:
    """Per fault: where the run restarted (for a fault followed by a truncation: the checkpoint that was
    then cut), the steps redone, and survived = the launch after it resumed and trained on (or finished)."""
    for r in records:
        after = r["launch"] + (r["kind"] != "truncate")
        if after >= len(launches):  # the fault landed in the last launch: survived if it still finished
            r.update(resumed_after=None, redone=None, survived=bool(launches) and launches[-1]["finished"])
            continue
        nxt = launches[after]
        r["resumed_after"] = r.get("resume_point", nxt["resumed_from"])
        r["redone"] = None if r["resumed_after"] is None else r["fault_step"] - r["resumed_after"]
        r["survived"] = nxt["resumed_from"] is not None and (
            nxt["finished"] or (nxt["last_step"] or 0) > nxt["resumed_from"])
    return records


def compare(run_dir: Path, reference: Path) -> dict:
    """Bit equality (and the largest absolute difference) of the exported student and the final
    checkpoint's weights, and equality of the evaluation history stored in the final checkpoint."""
    out = {}
    last = {name: checkpoint.find_latest(d) for name, d in (("run", run_dir), ("ref", reference))}
    pairs = {"student": (run_dir / "student.safetensors", reference / "student.safetensors")}
    if last["run"] and last["ref"]:
        pairs["checkpoint"] = (last["run"] / "model.safetensors", last["ref"] / "model.safetensors")
        out["same_final_step"] = last["run"].name == last["ref"].name
        out["history_equal"] = (checkpoint.read_trainer_state(last["run"])["history"]
                                == checkpoint.read_trainer_state(last["ref"])["history"])
    for name, (a, b) in pairs.items():
        if not (a.is_file() and b.is_file()):
            out[f"{name}_equal"], out[f"{name}_max_abs_diff"] = False, None
            continue
        wa, wb = load_file(str(a)), load_file(str(b))
        same_keys = wa.keys() == wb.keys()
        diffs = [(wa[k].double() - wb[k].double()).abs().max().item() if wa[k].numel() else 0.0
                 for k in wb if same_keys]
        out[f"{name}_equal"] = same_keys and all(torch.equal(wa[k], wb[k]) for k in wb)
        out[f"{name}_max_abs_diff"] = max(diffs, default=None) if same_keys else None
    return out


def summarise(records: list[dict], planned: int) -> tuple[list[list], dict]:
    rows, per_kind = [], {}
    for kind in KINDS:
        rs = [r for r in records if r["kind"] == kind]
        if not rs:
            continue
        redone = [r["redone"] for r in rs if r.get("redone") is not None]
        per_kind[kind] = {"injected": len(rs), "survived": sum(bool(r.get("survived")) for r in rs),
                          "redone_mean": round(sum(redone) / len(redone), 2) if redone else None,
                          "redone_max": max(redone, default=None)}
        rows.append([kind, *per_kind[kind].values()])
    redone = [r["redone"] for r in records if r.get("redone") is not None]
    total = {"planned": planned, "injected": len(records), "survived": sum(bool(r.get("survived")) for r in records),
             "redone_mean": round(sum(redone) / len(redone), 2) if redone else None,
             "redone_max": max(redone, default=None)}
    rows.append(["all", total["injected"], total["survived"], total["redone_mean"], total["redone_max"]])
    return rows, {"per_kind": per_kind, **total}


def tiny_teacher(path: Path) -> Path:
    """A randomly initialised resnet10t (10 classes) as safetensors, like tests/conftest.py's fixture."""
    import timm
    from safetensors.torch import save_file

    if not path.is_file():
        torch.manual_seed(123)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(timm.create_model("resnet10t", num_classes=10).state_dict(), str(path))
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ", ".join(KINDS))
    p.add_argument("--backend", default="auto", choices=("auto", "dali", "torch"), help="data.backend")
    p.add_argument("--method", default="kd")
    p.add_argument("--steps-per-epoch", type=int, default=6)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--epochs", type=int, default=0, help="0: enough steps for every fault to land")
    p.add_argument("--work", type=Path, default=Path("/tmp/kdpipe-faults"),
                   help="the soak's folder (emptied first; an uninterrupted reference of the same arguments is reused)")
    p.add_argument("--launch-timeout", type=float, default=600)
    p.add_argument("--max-wall", type=float, default=math.inf,
                   help="seconds: no fault injected after this; one more launch finishes the run")
    a = p.parse_args()
    kinds = a.kinds.split(",")
    if bad := set(kinds) - set(KINDS):
        sys.exit(f"error: --kinds {','.join(sorted(bad))}: choose from {', '.join(KINDS)}")
    import shutil

    every, spe = a.checkpoint_every, a.steps_per_epoch
    faults = plan(a.faults, a.seed, max_delay=2 * every, kinds=kinds)
    epochs = a.epochs or max(2, math.ceil(a.faults * (every + 1) / spe))
    teacher = tiny_teacher(a.work / "teacher" / "resnet10t.safetensors")
    overrides = {"method": a.method, "data.backend": a.backend, "data.per_class": 16, "data.val_per_class": 3,
                 "train.global_batch_size": 16, "train.steps_per_epoch": spe, "train.epochs": epochs,
                 "train.checkpoint_every": every, "train.keep_checkpoints": 3, "train.dist_timeout_s": 30,
                 "teacher.arch": "resnet10t", "teacher.checkpoint": str(teacher), "teacher.train_if_missing": False}
    t0, load0 = time.time(), load_average()
    ref_args, ref = tiny_args(a.work / "reference", **overrides), {"wall_s": "reused"}
    if json.loads((a.work / "reference" / "args.json").read_text() if (a.work / "reference" / "args.json").is_file()
                  else "null") != ref_args or not (a.work / "reference" / "tiny" / "student.safetensors").is_file():
        shutil.rmtree(a.work / "reference", ignore_errors=True)
        print(f"[faults] reference: {epochs} epochs x {spe} steps, uninterrupted", file=sys.stderr, flush=True)
        ref = launch(ref_args, a.work / "reference" / "tiny", a.work / "reference.log", None, a.work,
                     a.launch_timeout)
        if not ref["finished"]:
            sys.exit(f"error: the uninterrupted reference failed (rc {ref['rc']}):\n{tail(a.work / 'reference.log')}")
        (a.work / "reference" / "args.json").write_text(json.dumps(ref_args))
    print(f"[faults] reference: {ref['wall_s']} s; soak with {a.faults} faults", file=sys.stderr, flush=True)
    shutil.rmtree(a.work / "runs", ignore_errors=True)
    shutil.rmtree(a.work / "logs", ignore_errors=True)
    run_dir = a.work / "runs" / "tiny"
    records, launches = soak(tiny_args(a.work / "runs", **overrides), run_dir, faults, a.work / "logs",
                             a.launch_timeout, deadline=t0 + a.max_wall)
    rows, totals = summarise(records, a.faults)
    result = {**totals, **compare(run_dir, a.work / "reference" / "tiny"), "finished": bool(launches) and launches[-1]["finished"],
              "launches": len(launches), "uninjected_failures": sum(
                  1 for r in launches if not r["injected"] and not r["finished"]),
              "backend": a.backend, "method": a.method, "seed": a.seed, "epochs": epochs, "steps_per_epoch": spe,
              "checkpoint_every": every, "reference_wall_s": ref["wall_s"], "wall_s": round(time.time() - t0),
              "load_average": [round(load0, 2), round(load_average(), 2)]}
    (a.work / "faults.json").write_text(json.dumps({"result": result, "faults": records, "launches": launches},
                                                   indent=1))
    print(markdown_table(["fault", "injected", "survived", "steps redone (mean)", "steps redone (max)"], rows))
    print(f"\nfinal weights equal: student {'yes' if result['student_equal'] else 'no'} (max abs diff "
          f"{result['student_max_abs_diff']}), last checkpoint {'yes' if result.get('checkpoint_equal') else 'no'} "
          f"(max abs diff {result.get('checkpoint_max_abs_diff')}); evaluation history equal: "
          f"{result.get('history_equal')}; per fault: {a.work / 'faults.json'}")
    print("FAULTS " + json.dumps(result))
    ok = result["survived"] == result["injected"] and result["student_equal"] and result["finished"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
