"""What the augmentations cost: images/s of the train loader and of the training step with and without each
of them, side by side in one run, with the machine's load average.

    .venv/bin/python bench/augment_cost.py [--part all|loader|step] [--rounds 3] [--batches 12]

Loader (what `launch/imagenet.py --benchmark loader` times: `build_loaders` with the `augment` section):
the foolbox ImageNet photos re-encoded at typical ImageNet sizes (bench/loaders.py's dataset), random-resized
crop to 224 px, flip, batch 32, one view, on the CPU: DALI (2 threads) and torchvision (2 worker
processes). Cases: plain; mixup + CutMix (the loader only draws their parameters: the mixing is the
step's); RandAugment (2 operations, magnitude 9); both.
Step (what `--benchmark step` times: `Trainer.train_step` on a synthetic batch made once, on the CPU):
KD, the demo's pair (teacher resnet10t, student regnetx_002) at `--step-size` px, batch 32. Cases: plain;
mixup + CutMix (the batch mixed on the device, the mixed-label CE); the student EMA (decay 0.999); all.

Each case is built once; then rounds in a rotated order, each round of a case first taking a few untimed
batches (what its loader prefetched while the others ran) and then timing `--batches` batches or steps.
Figures: the median over rounds of images per wall second and per CPU second of the whole process
tree (loader workers included; less disturbed by other jobs on the machine than wall time); `load` is the
1-minute load average sampled after each timed round (median), since other jobs may share the machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from common import load_average, markdown_table  # noqa: E402
from loaders import make_dataset, tree_cpu_seconds  # noqa: E402
from pipeline.config import AugmentConfig, Config, DataConfig, parse_args  # noqa: E402
from pipeline.data import build_loaders  # noqa: E402

CPU = torch.device("cpu")
MIX = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}
RANDAUG = {"randaug_ops": 2, "randaug_magnitude": 9}
LOADER_CASES = {"plain": {}, "mixup+cutmix": MIX, "randaugment": RANDAUG, "all": {**MIX, **RANDAUG}}
STEP_CASES = {"plain": [], "mixup+cutmix": ["--augment.mixup_alpha", "0.8", "--augment.cutmix_alpha", "1.0"],
              "ema": ["--ema.decay", "0.999"]}
STEP_CASES["all"] = STEP_CASES["mixup+cutmix"] + STEP_CASES["ema"]
UNTIMED = 3  # batches a case takes first in each round: what its loader prefetched while others ran


def rounds(cases: dict, run_round, count: int, prepare=lambda case: None) -> dict[str, dict[str, float]]:
    """{case: {"per_s": images per wall s, "per_cpu_s": per CPU s, "load": load average}} (medians) over
    `count` rotated rounds; prepare(case) runs untimed before each, run_round(case) is timed and returns its
    number of images."""
    rates = {name: [] for name in cases}
    cpu_rates = {name: [] for name in cases}
    loads = {name: [] for name in cases}
    order = list(cases)
    for r in range(count):
        for name in order[r % len(order):] + order[:r % len(order)]:
            prepare(cases[name])
            wall, cpu = time.perf_counter(), tree_cpu_seconds()
            images = run_round(cases[name])
            rates[name].append(images / (time.perf_counter() - wall))
            cpu_rates[name].append(images / (tree_cpu_seconds() - cpu))
            loads[name].append(load_average())
    return {name: {"per_s": statistics.median(rates[name]), "per_cpu_s": statistics.median(cpu_rates[name]),
                   "load": statistics.median(loads[name])} for name in cases}


class Batches:
    """Endless batches of a train loader, epoch after epoch."""

    def __init__(self, loader):
        self.loader, self.epoch, self.it = loader, 0, None

    def next(self):
        while True:
            if self.it is None:
                self.loader.set_epoch(self.epoch)
                self.it = iter(self.loader)
            try:
                return next(self.it)
            except StopIteration:
                self.it, self.epoch = None, self.epoch + 1


def loader_costs(root: Path, backend: str, args) -> dict:
    cases = {}
    for name, keys in LOADER_CASES.items():
        data = DataConfig(root=str(root), backend=backend, image_size=224, val_resize=256, workers=2)
        train, _ = build_loaders(data, batch_size=32, views=1, seed=0, rank=0, world=1, device=CPU,
                                 augment=AugmentConfig(**keys))
        cases[name] = (Batches(train), train.batch_size)

    def run_round(case):
        batches, size = case
        for _ in range(args.batches):
            batches.next()
        return args.batches * size

    def prepare(case):  # untimed: the batches its loader prefetched while the other cases ran
        for _ in range(UNTIMED):
            case[0].next()

    return rounds(cases, run_round, args.rounds, prepare)


def step_costs(args) -> dict:
    from pipeline.benchmark import BenchmarkTrainer

    cases, tmp = {}, tempfile.TemporaryDirectory()
    for name, flags in STEP_CASES.items():
        cfg, _ = parse_args(["--method", "kd", "--data.image_size", str(args.step_size), "--data.val_resize",
                             str(args.step_size), "--train.batch_size", "32",
                             "--train.compile", "off", "--train.output_dir", tmp.name, "--train.name", name,
                             "--teacher.train_if_missing", "false", *flags])
        trainer = BenchmarkTrainer(cfg)
        cases[name] = (trainer, trainer.synthetic_batch())

    def run_round(case):
        trainer, batch = case
        for _ in range(args.batches):
            trainer.train_step(batch)
        return args.batches * trainer.batch_plan.per_process

    for trainer, batch in cases.values():
        trainer.train_step(batch)  # untimed: first-step allocations

    try:
        return rounds(cases, run_round, args.rounds)
    finally:
        for trainer, _ in cases.values():
            if trainer.writer is not None:
                trainer.writer.close()
        tmp.cleanup()


def table(results: dict[str, dict]) -> str:
    rows = []
    for part, cases in results.items():
        base = cases["plain"]["per_s"]
        cpu_base = cases["plain"]["per_cpu_s"]
        rows += [[part, name, round(r["per_s"], 1), f"{r['per_s'] / base:.2f}", round(r["per_cpu_s"], 1),
                  f"{r['per_cpu_s'] / cpu_base:.2f}", round(r["load"], 1)] for name, r in cases.items()]
    return markdown_table(["what", "case", "images/s", "x plain", "images per CPU s", "x plain", "load average"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "loader", "step"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12, help="timed batches (loader) or steps per round")
    parser.add_argument("--images", type=int, default=320, help="loader dataset size")
    parser.add_argument("--step-size", type=int, default=112, help="step: image size in pixels")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    results = {}
    if args.part in ("all", "loader"):
        with tempfile.TemporaryDirectory() as tmp:
            root = make_dataset(Path(tmp), args.images)
            (root / "val").symlink_to(root / "train")
            for backend in ("dali", "torch"):
                results[f"loader ({backend}, 224 px)"] = loader_costs(root, backend, args)
    if args.part in ("all", "step"):
        results[f"step (kd, {args.step_size} px)"] = step_costs(args)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
