"""Our training step side by side with the papers' loop, our own floor, the step from a teacher cache and
the student alone, same models, batch, data.

    .venv/bin/python bench/step.py [--methods kd,icd+kd,dccd] [--rounds 5] [--repeats 3] [--batch 128]
                                   [--cases ours,cached,alone,papers,floor,floor-fused] [--pair demo|benchmark]

On whatever device it finds: ResNet-18 -> ResNet-10-T at 28 px (the demo's images) on CPU, ResNet-34 ->
ResNet-18 at 224 px where CUDA is present; one synthetic batch, made once on the device, for all.
  ours:   `Trainer.train_step` (pipeline/benchmark.py's BenchmarkTrainer: the real step, no loader).
  papers: the loop of the methods' public code: fp32, the teacher's forward on its own under no_grad,
          the unfused PyTorch losses (kernels/reference.py), no compile, every loss term and the batch's
          top-1/top-5 read with `.item()` every step, torch.optim.SGD with its defaults.
  floor:  only the necessary work, plain eager: the teacher's forward (no_grad), the student's and the
          method's own modules' (ICD heads, CCD's M_s) forward and backward, the method's losses as plain
          PyTorch, one SGD step (torch's default implementation; `floor-fused`: torch's fused SGD, the
          fastest plain step torch offers, which is what "ours" uses too).
  cached: `Trainer.train_step` with `--teacher.cache`: the teacher's outputs rebuilt from the batch's
          records (synthetic ones of the layout a cache pass writes: K = teacher.cache_topk, the features
          the method needs), no teacher forward.
  alone:  `Trainer.train_step` of `--method none` on the same images (both views for a two-view method):
          the student alone, what any distillation step costs at least.
`--pair demo` (default on CPU): ResNet-18 -> ResNet-10-T at 28 px, 10 classes; `--pair demo-models`: the demo's
own pair (ResNet-10-T -> RegNetX-200MF) at 28 px; `--pair benchmark` (default on CUDA): ResNet-34 -> ResNet-18
at 224 px, 1000 classes.
The cases run in interleaved rounds (bench/common.py) so that other load hits them alike; medians.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm.optim  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from bench.common import interleaved, load_average, markdown_table  # noqa: E402
from pipeline.benchmark import BenchmarkTrainer  # noqa: E402
from pipeline.config import ModelConfig, parse_args  # noqa: E402
from pipeline.methods import MethodContext, NetOutput, Outputs, build_methods  # noqa: E402
from pipeline.models import create_network, freeze  # noqa: E402


class PlainStep:
    """The floor (log=False) or the papers' loop (log=True): fresh networks and method modules, eager."""

    def __init__(self, cfg, trainer: BenchmarkTrainer, log: bool, fused: bool):
        self.log, self.device, self.views = log, trainer.accelerator.device, trainer.views
        classes = trainer.train_loader.num_classes
        build = lambda c: create_network(ModelConfig(arch=c.arch), classes, cfg.data.mean, cfg.data.std)  # noqa: E731
        self.teacher = freeze(build(cfg.teacher)).to(self.device)
        self.student = build(cfg.student).to(self.device)
        ctx = MethodContext(cfg=cfg, student_dim=self.student.feature_dim, teacher_dim=self.teacher.feature_dim,
                            num_classes=classes, num_train_samples=trainer.train_loader.num_samples,
                            build_teacher_like=lambda: build(cfg.teacher))
        self.methods = torch.nn.ModuleList(build_methods(cfg.method, ctx)).to(self.device)
        self.ce_weight = cfg.train.ce_weight
        trained = torch.nn.ModuleDict({"student": self.student, "methods": self.methods})
        groups = timm.optim.param_groups_weight_decay(trained, cfg.train.weight_decay)
        self.optimizer = torch.optim.SGD(groups, lr=0.01, momentum=cfg.train.momentum, fused=fused or None)
        self.meters: list[float] = []

    def __call__(self, batch: dict):
        images, labels = batch["images"], batch["labels"].repeat(self.views)
        with torch.no_grad():
            teacher = NetOutput(*self.teacher(images))
        logits, features = self.student(images)
        out = Outputs(images=images, labels=labels, student=NetOutput(logits, features), teacher=teacher,
                      views=self.views, index=batch["index"])
        terms = [self.ce_weight * F.cross_entropy(logits, labels)]
        for method in self.methods:
            terms += list(method(out).values())
        loss = sum(terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.log:  # the public code's AverageMeters: every term and the batch accuracy, every step
            top5 = logits.topk(5, dim=1).indices == labels[:, None]
            self.meters = [t.item() for t in terms] + [top5[:, 0].float().mean().item(),
                                                       top5.any(dim=1).float().mean().item()]


PAIRS = {"benchmark": ["--teacher.arch", "resnet34", "--student.arch", "resnet18", "--data.image_size", "224",
                       "--data.val_resize", "256", "--data.root", "/imagenet"],
         "demo": ["--teacher.arch", "resnet18", "--student.arch", "resnet10t"],
         "demo-models": ["--teacher.arch", "resnet10t", "--student.arch", "regnetx_002"]}  # configs/demo.yaml's
CASES = ("ours", "cached", "alone", "papers", "floor", "floor-fused")


def build_cases(method: str, args) -> dict:
    cuda = torch.cuda.is_available()
    # (data.root only sets 1000 classes: no data is read. The demo pair is that of docs/performance.md's CPU
    # figures. No teacher checkpoint: a random teacher of the arch, the same cost.)
    argv = ["--config", "configs/demo.yaml", "--method", method, "--train.batch_size", str(args.batch),
            "--train.log_every", "1000000", "--teacher.checkpoint", ""] + PAIRS[args.pair]
    cfg, _ = parse_args(argv)
    trainer = BenchmarkTrainer(cfg)
    batch = trainer.synthetic_batch()
    steps = {}
    if "cached" in args.cases:  # no cache folder there: synthetic records of the layout a pass would write
        cached = BenchmarkTrainer(parse_args(argv + ["--teacher.cache", "runs/bench-no-cache"])[0])
        cached_batch = {**cached.synthetic_batch(), **batch}
        steps["cached"] = lambda: cached.train_step(cached_batch)
    if "alone" in args.cases:
        alone = BenchmarkTrainer(parse_args(argv + ["--method", "none"])[0])
        alone.views = trainer.views  # a two-view method's student sees both views: so does its floor
        steps["alone"] = lambda: alone.train_step(batch)
    if {"papers", "floor", "floor-fused"} & set(args.cases):
        papers, floor = PlainStep(cfg, trainer, log=True, fused=False), PlainStep(cfg, trainer, log=False, fused=False)
        floor_fused = PlainStep(cfg, trainer, log=False, fused=True)

    def reference(step):  # the plain steps use the unfused PyTorch losses on every device
        def run():
            kernels.set_backend("reference")
            try:
                step(batch)
            finally:
                kernels.set_backend("auto")
        return run
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def synced(fn):
        return lambda: (fn(), sync())
    steps["ours"] = lambda: trainer.train_step(batch)
    if "papers" in steps or {"papers", "floor", "floor-fused"} & set(args.cases):
        steps.update({"papers": reference(papers), "floor": reference(floor), "floor-fused": reference(floor_fused)})
    return {f"{method} {name}": synced(step) for name, step in steps.items() if name in args.cases}, cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="kd,icd+kd,dccd")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="steps per case per round")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--pair", choices=sorted(PAIRS), default=None,
                        help="models and image size (default: benchmark on CUDA, demo on CPU)")
    args = parser.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown or "ours" not in args.cases:
        parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)} (ours always runs)"
                     if unknown else "--cases must include ours")
    if {"papers", "floor", "floor-fused"} & set(args.cases):  # built together, compared together
        args.cases = list(dict.fromkeys(args.cases + ["papers", "floor", "floor-fused"]))
    args.pair = args.pair or ("benchmark" if torch.cuda.is_available() else "demo")
    logging.basicConfig(level=logging.ERROR)
    os.chdir(Path(__file__).resolve().parents[1])
    methods = args.methods.split(",")
    cases, cfgs = {}, {}
    for method in methods:
        new, cfgs[method] = build_cases(method, args)
        cases.update(new)
    load_before = load_average()
    times = interleaved(cases, rounds=args.rounds, repeats=args.repeats, warmup=2)
    load_after = load_average()
    cfg = cfgs[methods[0]]
    device = "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"\n{cfg.teacher.arch} -> {cfg.student.arch}, {cfg.data.image_size} px, batch {args.batch}, {device}; "
          f"median of {args.rounds} interleaved rounds of {args.repeats} steps; load average "
          f"{load_before:.1f} -> {load_after:.1f}")
    print(markdown_table(*tables(methods, times, args.cases)[0]))
    if {"cached", "alone"} <= set(args.cases):
        print()
        print(markdown_table(*tables(methods, times, args.cases)[1]))


def tables(methods: list[str], times: dict, cases: list[str]):
    """(header, rows) of ours against the papers and the floors (the cases run), and of the live step, the
    cached step and the student alone."""
    rows, cache_rows = [], []
    for method in methods:
        for clock in ("wall", "cpu"):  # CPU time: less disturbed by other processes on a shared machine
            t = {k.split(" ", 1)[1]: v[clock] for k, v in times.items() if k.split(" ", 1)[0] == method}
            row = [method, clock, 1e3 * t["ours"]] + [1e3 * t[c] for c in CASES[1:] if c in t]
            if "floor" in t:
                row.append(f"{t['ours'] / min(t['floor'], t['floor-fused']):.3f}")
                row.append(f"{t['papers'] / t['ours']:.3f}")
            rows.append(row)
            if "cached" in t and "alone" in t:
                cache_rows.append([method, clock, 1e3 * t["ours"], 1e3 * t["cached"], 1e3 * t["alone"],
                                   f"{t['ours'] / t['alone']:.3f}", f"{t['cached'] / t['alone']:.3f}",
                                   f"{t['cached'] / t['ours']:.3f}"])
    header = ["method", "clock", "ours ms"] + [f"{c} ms" for c in CASES[1:] if c in cases]
    if "floor" in cases:
        header += ["ours / best floor", "papers / ours"]
    return ((header, rows), (["method", "clock", "live (ours) ms", "cached ms", "alone (none) ms", "live / alone",
                              "cached / alone", "cached / live"], cache_rows))

if __name__ == "__main__":
    main()
