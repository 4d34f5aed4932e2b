"""Every method on the demo, same settings: student top-1 after a short run, and step time relative to `none`.

    .venv/bin/python bench/methods.py [--epochs 2] [--per-class 300] [--methods none,kd,...] [--crd-k 16384]

One process (the CPU path of the trainer), the demo recipe (configs/demo.yaml: Fashion-MNIST photos at
28 x 28, cached ResNet-18 teacher, ResNet-10-T student, batch 128) on a `--per-class` subset; every
method runs the same epochs, seed, schedule and data, one after another. The step time is the
trainer's `train_step` (forward of teacher and student, method terms, backward, optimizer step; data
loading excluded), the median over the run after 3 warm-up steps, in wall time and in the process's
CPU time (all its threads), the latter being less disturbed by other load on the machine. Two-view
methods (dkd, ccd, dccd) push 2 x 128 images through both networks per step; slkd trains two extra
ResNet-18s. The load average at each run's start is printed to show how busy the machine was.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import parse_args  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402

METHODS = "none,kd,icd,icd+kd,ccd+kd,dkd+kd,dccd,slkd,crd+kd"
WARMUP_STEPS = 3


def timed(step_fn, wall: list, cpu: list):
    def step(batch):
        w, c = time.perf_counter(), time.process_time()
        out = step_fn(batch)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
        return out
    return step


def run(method: str, args, out_dir: str) -> dict:
    cfg, _ = parse_args(["--config", "configs/demo.yaml", "--method", method, "--train.name", method.replace("+", "_"),
                         "--train.epochs", str(args.epochs), "--data.per_class", str(args.per_class),
                         "--data.val_per_class", str(args.val_per_class), "--data.backend", "torch",
                         "--train.output_dir", out_dir, "--train.compile", "off", "--train.log_every", "1000",
                         "--crd.nce_k", str(args.crd_k)])
    load = os.getloadavg()[0]
    trainer = Trainer(cfg)
    wall, cpu = [], []
    trainer.train_step = timed(trainer.train_step, wall, cpu)
    summary = trainer.fit()
    return {"method": method, "top1": summary["student_top1"], "teacher_top1": summary.get("teacher_top1"),
            "wall_ms": 1e3 * statistics.median(wall[WARMUP_STEPS:] or wall), "cpu_ms": 1e3 * statistics.median(cpu[WARMUP_STEPS:] or cpu),
            "steps": len(wall), "load": load, "extra": {k: v for k, v in summary.items() if k.startswith("sl")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=300)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--crd-k", type=int, default=16384)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.chdir(Path(__file__).resolve().parents[1])
    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for method in args.methods.split(","):
            rows.append(run(method, args, out_dir))
            print(f"done {method}: {rows[-1]}", file=sys.stderr, flush=True)
    base = next((r for r in rows if r["method"] == "none"), rows[0])
    print(f"\ndemo, {args.epochs} epochs, {args.per_class} train / {args.val_per_class} val images per class, "
          f"batch 128, 1 process, {os.cpu_count()} cores; teacher top-1 {rows[-1]['teacher_top1']}")
    print(f"| method | student top-1 | step ms (wall) | x none (wall) | step ms (CPU) | x none (CPU) | load avg |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        extra = ", ".join(f"{k} {v:.1f}" for k, v in r["extra"].items() if k.endswith("top1"))
        print(f"| {r['method']} | {r['top1']:.2f}{f' ({extra})' if extra else ''} | {r['wall_ms']:.0f} | "
              f"{r['wall_ms'] / base['wall_ms']:.2f} | {r['cpu_ms']:.0f} | {r['cpu_ms'] / base['cpu_ms']:.2f} | "
              f"{r['load']:.1f} |")


if __name__ == "__main__":
    main()
