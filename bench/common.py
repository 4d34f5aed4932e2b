"""What every benchmark repeats: interleaved timing rounds, medians in wall and CPU time, the load
average, markdown tables, and the demo teacher a fresh clone does not have yet.

Each script in bench/ holds only its experiment and imports these.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench scripts run from a checkout without install
    sys.path.insert(0, str(REPO))


def load_average() -> float:
    return os.getloadavg()[0]


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, repeats: int = 1,
                warmup: int = 1) -> dict[str, dict[str, float]]:
    """Run each case `repeats` times per round, the cases' order rotated every round so that other load
    on the machine hits them alike. Returns {case: {"wall": median s per call, "cpu": median process CPU
    s per call, "min_wall": fastest round}}."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    wall = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    order = list(cases)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            w, c = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                cases[name]()
            wall[name].append((time.perf_counter() - w) / repeats)
            cpu[name].append((time.process_time() - c) / repeats)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name]),
                   "min_wall": min(wall[name])} for name in cases}


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def ensure_demo_teacher(config: str = "configs/demo.yaml") -> Path:
    """The demo's cached teacher, trained once (as the demo itself does) when a fresh clone lacks it."""
    from pipeline.config import parse_args

    cfg, _ = parse_args(["--config", str(REPO / config)])
    path = Path(cfg.teacher.checkpoint)
    path = path if path.is_absolute() else REPO / path
    if not path.is_file():
        print(f"[bench] demo teacher {path} missing: training it once (as the demo does)", file=sys.stderr)
        sys.path.insert(0, str(REPO / "launch"))
        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            from imagenet import train_missing_teacher

            train_missing_teacher(cfg)
        finally:
            os.chdir(cwd)
    return path
