"""CRD's per-step cost: the official other-class negatives vs `crd.shared_negatives`, side by side.

    .venv/bin/python bench/crd.py [--nce-k 16384] [--per-class 1000] [--rounds 5] [--steps 2]

One process (the trainer's CPU path, no compile), the demo recipe (configs/demo.yaml: 28 x 28 photos)
with a ResNet-18 teacher and a ResNet-10-T student (the pair of the figures in docs/), batch 128, on
`--per-class` images per class (N = 10 x that: the memory banks' rows). The teacher's weights are
random (timing does not depend on them, and a fresh clone need not train the demo teacher for this).
Each case's `Trainer.train_step` (teacher and student forward, method terms, backward, optimizer step;
no data loading) runs on one fixed batch, the cases
interleaved round by round (bench/common.py); figures are medians over rounds, wall and process CPU time.
Cases: kd (the floor), crd+kd with the official negatives (each anchor's K drawn from other classes:
a B x K x 128 gather per bank), crd+kd with shared negatives (one (B x 128) @ (128 x K) product per bank).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, interleaved, load_average, markdown_table  # noqa: E402


def random_teacher(path: Path, arch: str, classes: int) -> str:
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model(arch, num_classes=classes).state_dict(), str(path))
    return str(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nce-k", type=int, default=16384)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per case per round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.chdir(REPO)
    import torch

    from pipeline.config import parse_args
    from pipeline.trainer import Trainer

    cases = {"kd": ("kd", []), "crd+kd official": ("crd+kd", []),
             "crd+kd shared": ("crd+kd", ["--crd.shared_negatives", "true"])}
    trainers, batches = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = random_teacher(Path(tmp) / "teacher.safetensors", "resnet18", 10)
        for name, (method, extra) in cases.items():
            cfg, _ = parse_args(["--config", "configs/demo.yaml", "--method", method, "--train.name", name.replace(" ", "_"),
                                 "--teacher.checkpoint", teacher, "--teacher.arch", "resnet18",
                                 "--student.arch", "resnet10t", "--data.per_class", str(args.per_class),
                                 "--data.backend", "torch", "--data.workers", "0", "--train.output_dir", tmp,
                                 "--train.compile", "off", "--train.batch_size", str(args.batch_size),
                                 "--crd.nce_k", str(args.nce_k), *extra])
            trainer = Trainer(cfg)
            trainer.train_loader.set_epoch(0)
            batches[name] = next(iter(trainer.train_loader))
            trainer.model.train()
            trainers[name] = trainer

        def step(name):
            def run():
                for _ in range(args.steps):
                    trainers[name].train_step(batches[name])
            return run

        load_before = load_average()
        times = interleaved({name: step(name) for name in cases}, rounds=args.rounds)
        load_after = load_average()
    n = trainers["kd"].train_loader.num_samples
    print(f"\nCRD step cost: demo, batch {args.batch_size}, N = {n} bank rows, K = {args.nce_k}, 1 process, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores; medians of {args.rounds} interleaved rounds "
          f"of {args.steps} steps; load average {load_before:.1f} -> {load_after:.1f}")
    rows = [[name, 1e3 * t["wall"] / args.steps, 1e3 * t["cpu"] / args.steps, t["wall"] / times["kd"]["wall"],
             t["cpu"] / times["kd"]["cpu"]] for name, t in times.items()]
    print(markdown_table(["case", "step ms (wall)", "step ms (CPU)", "x kd (wall)", "x kd (CPU)"], rows))
    for clock in ("wall", "cpu"):
        official, shared, kd = (times[c][clock] for c in ("crd+kd official", "crd+kd shared", "kd"))
        print(f"{clock}: official / shared per step {official / shared:.2f}x; CRD's own share (step - kd): "
              f"official {1e3 * (official - kd) / args.steps:.0f} ms, shared {1e3 * (shared - kd) / args.steps:.0f} ms")

if __name__ == "__main__":
    main()
