"""Every method on the demo, same settings: student top-1 after a short run, and step time relative to `none`.

    .venv/bin/python bench/methods.py [--epochs 2] [--per-class 500] [--methods none,kd,...] [--crd-k 16384]

One process (the CPU path of the trainer), the demo recipe (configs/demo.yaml: Fashion-MNIST photos at
28 x 28, its cached teacher, its student and batch) on a `--per-class` subset; every
method runs the same epochs, seed, schedule and data (top-1 on `--val-per-class` images per class).
Step time: afterwards, each trained method's `Trainer.train_step` (teacher and student forward, method
terms, backward, optimizer step; no data loading) runs on one fixed batch, the methods interleaved
round by round (`--rounds`, order rotated each round) so that other load on the machine hits them
alike; the figure is the median over the rounds, in wall time and in the process's CPU time (all its
threads). Two-view methods (dkd, ccd, dccd) push 2 x batch images through both networks per step; slkd
trains two extra ResNet-18s. The load average when timing starts and ends is printed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_demo_teacher, interleaved  # noqa: E402
from pipeline.config import parse_args  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402

METHODS = "none,kd,icd,icd+kd,ccd+kd,dkd+kd,dccd,slkd,crd+kd"


def train(method: str, args, out_dir: str) -> tuple[Trainer, dict]:
    cfg, _ = parse_args(["--config", "configs/demo.yaml", "--method", method, "--train.name", method.replace("+", "_"),
                         "--train.epochs", str(args.epochs), "--data.per_class", str(args.per_class),
                         "--data.val_per_class", str(args.val_per_class), "--data.backend", "torch",
                         "--train.output_dir", out_dir, "--train.compile", "off", "--train.log_every", "1000",
                         "--crd.nce_k", str(args.crd_k), "--data.workers", "0"])
    trainer = Trainer(cfg)
    return trainer, trainer.fit()


def time_steps(trainers: dict[str, Trainer], rounds: int, steps: int) -> dict[str, tuple[float, float]]:
    """{method: (median wall s, median CPU s)} of train_step on one fixed batch, methods interleaved."""
    batches = {}
    for method, trainer in trainers.items():
        trainer.train_loader.set_epoch(0)
        batches[method] = next(iter(trainer.train_loader))
        trainer.model.train()
        trainer.train_step(batches[method])  # warm-up
    cases = {m: (lambda t=trainer, b=batches[m]: t.train_step(b)) for m, trainer in trainers.items()}
    times = interleaved(cases, rounds, repeats=steps, warmup=0)  # warmed up above
    return {m: (times[m]["wall"], times[m]["cpu"]) for m in trainers}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--val-per-class", type=int, default=300)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--crd-k", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.chdir(Path(__file__).resolve().parents[1])
    ensure_demo_teacher()  # a fresh clone has no cached teacher yet: train it once, as the demo does
    trainers, summaries = {}, {}
    with tempfile.TemporaryDirectory() as out_dir:
        for method in args.methods.split(","):
            trainers[method], summaries[method] = train(method, args, out_dir)
            print(f"trained {method}: top-1 {summaries[method]['student_top1']:.2f}", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        times = time_steps(trainers, args.rounds, args.steps)
        load_after = os.getloadavg()[0]
    base_wall, base_cpu = times.get("none", next(iter(times.values())))
    teacher = next((f"{s['teacher_top1']:.2f}" for s in summaries.values() if s.get("teacher_top1") is not None),
                   "-")
    batch = next(iter(trainers.values())).cfg.train.batch_size
    print(f"\ndemo, {args.epochs} epochs, {args.per_class} train / {args.val_per_class} val images per class, "
          f"batch {batch}, 1 process, {os.cpu_count()} cores; teacher top-1 {teacher}; step times: median of {args.rounds} "
          f"interleaved rounds of {args.steps} steps, load average {load_before:.1f} -> {load_after:.1f}")
    print("| method | student top-1 | step ms (wall) | x none (wall) | step ms (CPU) | x none (CPU) |")
    print("|---|---|---|---|---|---|")
    for method, summary in summaries.items():
        extra = ", ".join(f"{k} {v:.1f}" for k, v in summary.items() if k.startswith("sl") and k.endswith("top1"))
        wall, cpu = times[method]
        print(f"| {method} | {summary['student_top1']:.2f}{f' ({extra})' if extra else ''} | {1e3 * wall:.0f} | "
              f"{wall / base_wall:.2f} | {1e3 * cpu:.0f} | {cpu / base_cpu:.2f} |")


if __name__ == "__main__":
    main()
