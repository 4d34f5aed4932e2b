"""A fork server for bench/mutation_auto.py: import the heavy libraries once, then fork one child per mutant.

`python bench/mutation_worker.py SCRATCH` serves one scratch copy of the repository. Each stdin line is a
job, JSON {"file": path relative to SCRATCH, "source": the mutated text (null: run unmutated), "tests":
[pytest node ids], "timeout": s}; each stdout line the answer {"status": passed|failed|no tests|timeout,
"seconds", "tail"}. The child writes the mutant, runs `pytest -x` on the tests in-process and exits; the
file is restored after it. Nothing of the repository is imported here, so each child imports the mutant.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # as tests/conftest.py sets it, before anything imports triton
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.dont_write_bytecode = True  # a mutant must never be read back from a stale .pyc

PRELOAD = ("numpy", "torch", "torchvision", "timm", "PIL.Image", "yaml", "pydantic", "annotated_types",
           "accelerate", "safetensors.torch", "matplotlib.pyplot", "hypothesis", "pytest", "xdist", "psutil",
           "triton", "torch.utils.tensorboard")


def preload():
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional library: the child imports it (or fails) as the tests would
            pass


def run_child(root: Path, tests: list[str], log: Path) -> None:
    """In the forked child: its own process group (a timeout kills subprocesses too), pytest in-process."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(root)
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = str(root)
    import pytest

    # Plain asserts (no rewriting on import) and no exit-time gc.collect passes: a second less per mutant.
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:threadexception",
                        "--assert=plain", "-n", "0", "--tb=line", *tests])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def run_job(root: Path, job: dict) -> dict:
    path = root / job["file"]
    original = path.read_text()
    log = root / ".mutation-child.log"
    start = time.time()
    if job.get("source") is not None:
        path.write_text(job["source"])
    try:
        pid = os.fork()
        if pid == 0:
            try:
                run_child(root, job["tests"], log)
            finally:
                os._exit(3)
        deadline = start + job["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                os.waitpid(pid, 0)
                return {"status": "timeout", "seconds": time.time() - start, "tail": ""}
            time.sleep(0.05)
    finally:
        path.write_text(original)
    code = os.waitstatus_to_exitcode(status)
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-3:]) if log.exists() else ""
    # pytest: 0 all passed, 1 a test failed, 2 interrupted (a collection error: the mutant broke an import),
    # 4 usage error (a node id that no longer exists), 5 no tests collected: those two are stale selections,
    # never kills. A crash of the child (a signal) is a failure.
    outcome = {0: "passed", 4: "no tests", 5: "no tests"}.get(code, "failed")
    if code == 4 and "not found" not in tail:  # 4 is also a conftest that fails to import: the mutant broke it
        outcome = "failed"
    return {"status": outcome, "seconds": time.time() - start, "tail": tail, "code": code}


def run_job_or_whole_functions(root: Path, job: dict) -> dict:
    """A parametrization generated from the code (the config schema's bound cases) may be renamed by the very
    mutant under test: then every parametrization of those test functions runs."""
    r = run_job(root, job)
    if r["status"] == "no tests" and "not found" in r["tail"]:
        whole = list(dict.fromkeys(t.split("[")[0] for t in job["tests"]))
        again = run_job(root, {**job, "tests": whole})
        again["seconds"] += r["seconds"]
        return again
    return r


def main():
    root = Path(sys.argv[1]).resolve()
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run_job_or_whole_functions(root, json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
