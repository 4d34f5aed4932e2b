"""Every method side by side over seeds, from one command: `python launch/compare.py [--seeds 3] [FLAGS...]`.

Trains (or reuses the cached) teacher once, then the student with each `--methods` entry for each seed,
one run after another in this process (the same Trainer and config as launch/imagenet.py), seed-major
so that an interrupted comparison already holds every method at the first seeds. Resumable: a finished
run (its summary.json) is reused, an interrupted one continues from its last checkpoint.

Writes into `--out` (default runs/compare): one run folder per (method, seed), results.jsonl (one line
per finished run), results.md (mean and standard deviation over seeds of top-1/top-5 per method, the
teacher, the gain over `none`, wall time per run), top1.png (top-1 per method with error bars),
val_top1.png (validation top-1 per epoch per method, mean over seeds) and curves.png (the first seed's
loss terms, lr, images/s, top-1; launch/plot.py). Any further flag is a config flag for every run,
e.g. `--train.epochs 2`; `--config` picks the recipe (default: the demo).

`--variant NAME=FLAGS` (repeatable) adds a named row trained with extra config flags, e.g.
`--variant "kd_mixup=--method kd --augment.mixup_alpha 1.0"`; with variants and no `--methods`, only the
variants run.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # launch/: imagenet.py, plot.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: pipeline/

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import compare_cache  # noqa: E402
import plot  # noqa: E402
from imagenet import train_missing_teacher  # noqa: E402
from pipeline.batch import plan_batch  # noqa: E402
from pipeline.checkpoint import write_text_atomically  # noqa: E402
from pipeline.config import ConfigError, parse_args  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.methods import METHODS, parse_method  # noqa: E402

log = logging.getLogger("compare")

DEFAULT_METHODS = "none,kd,icd,icd+kd,dkd+kd,ccd+kd,dccd,slkd,crd+kd"
SUMMARY = "summary.json"


def run_name(method: str, seed: int) -> str:
    return f"{method.replace('+', '_')}-seed{seed}"


def views(method: str) -> int:
    return max(METHODS[n].views for n in parse_method(method))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME=FLAGS' -> (NAME, the flags split as a shell would)."""
    name, _, flags = text.partition("=")
    if not name.strip() or not flags.strip() or "+" in name:
        raise ValueError(f"--variant {text!r}: expected NAME=FLAGS, e.g. 'kd_mixup=--augment.mixup_alpha 1.0' "
                         "(a name without '+')")
    return name.strip(), shlex.split(flags)


def run_one(base_argv: list[str], method: str, seed: int, out: Path, flags: list[str] | None = None,
            sweep=None) -> dict:
    """Train one (method, seed) run, or reuse it when finished; returns its summary ({"stopped": True} if a
    signal stopped it: its checkpoint is kept and the next invocation continues it). With `flags` (a
    variant), `method` names the run and the flags (and any --method among them) configure it. `sweep`:
    the comparison's teacher cache (compare_cache.py)."""
    from pipeline.trainer import Trainer

    run_dir = out / run_name(method, seed)
    if (run_dir / SUMMARY).is_file():
        return {**json.loads((run_dir / SUMMARY).read_text()), "reused": True}
    chosen = flags if flags is not None else ["--method", method]
    seed_argv = ["--train.seed", str(seed)]
    cfg, _ = parse_args(base_argv + chosen + seed_argv + ["--train.output_dir", str(out),
                                                          "--train.name", run_name(method, seed),
                                                          "--train.baseline", "false"]
                        + compare_cache.run_argv(sweep, base_argv, method, chosen, seed_argv))
    cpu = time.process_time()
    trainer = Trainer(cfg, resume="auto")
    summary = trainer.fit()
    cpu_s = round(time.process_time() - cpu, 1)  # this process's CPU time (all threads): less load-dependent
    if not summary.get("stopped") and trainer.accelerator.is_main_process:
        summary = {**summary, "method": method, "seed": seed, "views": views(cfg.method), "run_dir": str(run_dir),
                   "cpu_s": cpu_s, "teacher_source": (sweep.sources.get(method, "live") if sweep else "live")
                   if compare_cache.needs_teacher(cfg.method) else None}
        # Written last: its presence means the run is finished.
        write_text_atomically(run_dir / SUMMARY, json.dumps(summary, indent=1) + "\n")
    del trainer
    gc.collect()  # loaders, banks and networks of one run must not pile up over 27 runs
    return summary


def extra_top1(key: str) -> bool:
    """Further networks' top-1 reported beside the student's: SLKD's sl1/sl2, the student EMA."""
    return key.endswith("_top1") and (key.startswith("sl") or key == "ema_top1")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: list[dict], methods: list[str]) -> list[dict]:
    """Per method: mean/std of top-1 and top-5 over its finished seeds, the gain over `none`, wall time."""
    rows = []
    for method in methods:
        runs = [r for r in results if r["method"] == method]
        if not runs:
            continue
        top1, top5 = mean_std([r["student_top1"] for r in runs]), mean_std([r["student_top5"] for r in runs])
        rows.append({"method": method, "seeds": len(runs), "top1": top1, "top5": top5,
                     "wall_s": statistics.fmean(r["wall_s"] for r in runs), "views": runs[0]["views"],
                     "extra": {k: statistics.fmean(r[k] for r in runs) for k in runs[0] if extra_top1(k)}})
    base = {r["seed"]: r["student_top1"] for r in results if r["method"] == "none"}
    for row in rows:  # the gain is paired by seed: same data order and initial weights as `none`
        gains = [r["student_top1"] - base[r["seed"]] for r in results if r["method"] == row["method"]
                 and r["seed"] in base]
        row["gain"] = mean_std(gains) if gains else None
    return rows


def teacher_row(results: list[dict]) -> tuple[float, float] | None:
    t1 = [r["teacher_top1"] for r in results if r.get("teacher_top1") is not None]
    t5 = [r["teacher_top5"] for r in results if r.get("teacher_top5") is not None]
    return (t1[0], t5[0] if t5 else float("nan")) if t1 else None


def markdown(rows: list[dict], teacher: tuple[float, float] | None, cfg, seeds: list[int]) -> str:
    lines = [f"teacher {cfg.teacher.arch} -> student {cfg.student.arch}, {cfg.train.epochs} epochs, "
             f"seeds {', '.join(map(str, seeds))}; top-1/top-5 in %, mean +- standard deviation over seeds; "
             "gain = top-1 minus `none`'s at the same seed (mean +- std)", "",
             "| method | seeds | top-1 | top-5 | gain over none | wall s per run | images per step |",
             "|---|---|---|---|---|---|---|"]
    if teacher:
        lines.append(f"| teacher ({cfg.teacher.arch}) | - | {teacher[0]:.2f} | {teacher[1]:.2f} | - | - | - |")
    batch = plan_batch(cfg.train, processes=1).global_batch  # compare runs every run in this one process
    for r in rows:
        name = "none (student alone)" if r["method"] == "none" else r["method"]
        extra = "".join(f"; {k[:-5]} {v:.2f}" for k, v in r["extra"].items())
        gain = "-" if r["gain"] is None or r["method"] == "none" else f"{r['gain'][0]:+.2f} +- {r['gain'][1]:.2f}"
        lines.append(f"| {name} | {r['seeds']} | {r['top1'][0]:.2f} +- {r['top1'][1]:.2f}{extra} | "
                     f"{r['top5'][0]:.2f} +- {r['top5'][1]:.2f} | {gain} | {r['wall_s']:.0f} | {r['views'] * batch} |")
    return "\n".join(lines) + "\n"


def plot_top1(rows: list[dict], teacher, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["method"] for r in rows]
    means = [r["top1"][0] for r in rows]
    ax.bar(names, means, yerr=[r["top1"][1] for r in rows], capsize=4,
           color=["0.6" if n == "none" else "tab:blue" for n in names])
    for x, r in enumerate(rows):
        ax.text(x, r["top1"][0], f"{r['top1'][0]:.1f}\n", ha="center", va="bottom", fontsize=7)
    if teacher:
        ax.axhline(teacher[0], color="tab:red", ls="--", lw=1, label=f"teacher {teacher[0]:.1f}")
    none = next((r["top1"][0] for r in rows if r["method"] == "none"), None)
    if none is not None:
        ax.axhline(none, color="0.4", ls=":", lw=1, label=f"student alone {none:.1f}")
    low = min(means + ([teacher[0]] if teacher else [])) - 5
    ax.set_ylim(max(0, low), min(100, max(means + ([teacher[0]] if teacher else [])) + 3))
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"student top-1 per method (mean +- std over {max(r['seeds'] for r in rows)} seeds)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return plot.save(fig, out)


def plot_val_per_epoch(results: list[dict], methods: list[str], teacher, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colours = plt.get_cmap("tab10")
    for i, method in enumerate(methods):
        curves = [plot.eval_curve(plot.read_metrics(r["run_dir"])) for r in results if r["method"] == method]
        if not curves:
            continue
        epochs = curves[0][0]
        curves = [c[1] for c in curves if c[0] == epochs]
        mean = [statistics.fmean(v) for v in zip(*curves)]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*curves)]
        style = {"color": "0.3", "ls": ":"} if method == "none" else {"color": colours(i % 10)}
        ax.plot(epochs, mean, marker="o", ms=3, lw=1.2, label=method, **style)
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        alpha=0.15, color=style["color"])
    if teacher:
        ax.axhline(teacher[0], color="tab:red", ls="--", lw=1, label="teacher")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("validation top-1 per epoch (mean over seeds, band = +- std)", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return plot.save(fig, out)


def write_outputs(results: list[dict], methods: list[str], seeds: list[int], cfg, out: Path) -> dict:
    write_text_atomically(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in results))
    rows = aggregate(results, methods)
    teacher = teacher_row(results)
    (out / "results.md").write_text(markdown(rows, teacher, cfg, seeds))
    files = {"results.jsonl": out / "results.jsonl", "results.md": out / "results.md"}
    if rows:
        files["top1.png"] = plot_top1(rows, teacher, out / "top1.png")
        files["val_top1.png"] = plot_val_per_epoch(results, methods, teacher, out / "val_top1.png")
        first = [r for r in results if r["seed"] == seeds[0]]
        files["curves.png"] = plot.plot_runs([r["run_dir"] for r in first], out / "curves.png",
                                             labels=[r["method"] for r in first], title=f"seed {seeds[0]}")
    return files


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=None, help=f"comma-separated --method values (default: {DEFAULT_METHODS})")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="a named row trained with these config flags added (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 per method")
    parser.add_argument("--out", default="runs/compare", help="folder for the runs and the results")
    parser.add_argument("--teacher-cache", default="", metavar="PATH|auto",
                        help="read the teacher's outputs from this cache (launch/cache_teacher.py) in every run it "
                             "can serve; 'auto': write it first into OUT/teacher-cache (one teacher pass for the "
                             "whole comparison: the views, temperatures and features the --methods need, K = "
                             "teacher.cache_topk). Every run gets the cache's data.aug_seed; a method it cannot "
                             "serve trains with the live teacher, the reason printed and kept in results.jsonl")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the results of the runs finished so far (a partial comparison)")
    args, config_argv = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    method_list = args.methods if args.methods is not None else ("" if args.variant else DEFAULT_METHODS)
    methods = [m.strip() for m in method_list.split(",") if m.strip()]
    seeds = list(range(args.seeds))
    try:
        cfg, _ = parse_args(config_argv)
        for m in methods:
            parse_method(m)
        variants = dict(parse_variant(v) for v in args.variant)
        run_methods = {m: m for m in methods}  # row name -> the --method it trains
        run_methods.update({name: parse_args(config_argv + flags)[0].method for name, flags in variants.items()})
    except (ConfigError, ValueError) as e:
        sys.exit(f"error: {e}")
    methods += [name for name in variants if name not in methods]
    if args.seeds < 1 or not methods:
        sys.exit("error: --seeds must be >= 1 and --methods must name at least one method")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    needs_teacher = any(METHODS[n].needs_teacher for m in methods for n in parse_method(run_methods[m]))
    if needs_teacher and not args.report_only and cfg.teacher.train_if_missing and not Path(cfg.teacher.checkpoint).is_file():
        print(f"[compare] teacher {cfg.teacher.checkpoint} missing: training it once", flush=True)
        wall, cpu = time.time(), time.process_time()
        if not train_missing_teacher(cfg):
            return {"stopped": True}
        print(f"[compare] teacher trained: {time.time() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s CPU, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    start = time.time()
    try:
        sweep = None if args.report_only else compare_cache.prepare(args.teacher_cache, cfg, config_argv,
                                                                    sorted(set(run_methods.values())), out)
    except UserError as e:
        sys.exit(f"error: {e}")
    if sweep is not None:
        made = f"written in {sweep.pass_s:.0f} s" if sweep.pass_s is not None else "reused"
        print(f"[compare] teacher cache {sweep.root} ({made}); data.aug_seed {sweep.aug_seed} for every run", flush=True)
    total, done, results = len(methods) * len(seeds), 0, []
    for seed in seeds:  # seed-major: a partial comparison has every method at the first seeds
        for method in methods:
            done += 1
            tag = f"[compare {done}/{total}] {method} seed {seed}"
            if args.report_only and not (out / run_name(method, seed) / SUMMARY).is_file():
                print(f"{tag}: not finished yet", flush=True)
                continue
            print(f"{tag}: {'reusing' if (out / run_name(method, seed) / SUMMARY).is_file() else 'training'}",
                  flush=True)
            if sweep is not None and compare_cache.needs_teacher(run_methods[method]):
                compare_cache.run_argv(sweep, config_argv, method, variants.get(method, ["--method", method]),
                                       ["--train.seed", str(seed)])
                if sweep.sources[method] != "cache" and seed == seeds[0]:
                    print(f"{tag}: live teacher: the cache cannot serve it ({sweep.sources[method][6:]})", flush=True)
            try:
                summary = run_one(config_argv, method, seed, out, variants.get(method), sweep)
            except Exception as e:  # one failing method must not cost the others' results
                log.exception("%s failed", tag)
                print(f"{tag}: FAILED ({type(e).__name__}: {e})", flush=True)
                continue
            if summary.get("stopped"):
                print(f"{tag}: stopped by a signal; rerun the same command to continue", flush=True)
                write_outputs(results, methods, seeds, cfg, out)
                return {"stopped": True}
            results.append({k: summary.get(k) for k in (
                "method", "seed", "student_top1", "student_top5", "teacher_top1", "teacher_top5", "wall_s",
                "epochs", "views", "skipped_steps", "cpu_s", "run_dir", "teacher_source")} | {
                    k: v for k, v in summary.items() if extra_top1(k)})
            teacher = f", teacher {summary['teacher_top1']:.2f}" if summary.get("teacher_top1") is not None else ""
            print(f"{tag}: top-1 {summary['student_top1']:.2f}, top-5 {summary['student_top5']:.2f}{teacher}, "
                  f"{summary['wall_s']:.0f} s{' (reused)' if summary.get('reused') else ''}; "
                  f"{time.time() - start:.0f} s elapsed, load average {os.getloadavg()[0]:.1f}", flush=True)
    files = write_outputs(results, methods, seeds, cfg, out)
    if sweep is not None:
        with open(out / "results.md", "a") as f:
            f.write("\n" + compare_cache.note(sweep))
    print((out / "results.md").read_text())
    print(f"[compare] {time.time() - start:.0f} s in all", flush=True)
    print("[compare] wrote " + ", ".join(str(p) for p in files.values()), flush=True)
    return {"results": results, "files": files}


if __name__ == "__main__":
    main()
