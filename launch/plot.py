"""PNG curves from runs' metrics.jsonl, several runs overlaid: `python launch/plot.py RUN_DIR... [--out curves.png]`.

One panel per loss term (`loss/<term>` of the train records, and their sum), the learning rate, images/s
and validation top-1 per epoch (the eval records); one colour per run, labelled by the run folder's name.
`launch/compare.py` uses the same functions for its figures.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

DPI = 80  # small PNGs (they are committed under docs/)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl; a clear error when it is missing, a torn last line is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run_dir} a run folder written by the trainer?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
            continue
    return records


def eval_curve(records: list[dict], key: str = "student_top1") -> tuple[list[int], list[float]]:
    """(epochs, values) of an eval metric; a resumed run's repeated epochs keep the last record."""
    by_epoch = {r["epoch"]: r[key] for r in records if r.get("kind") == "eval" and r.get(key) is not None}
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def train_series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get("kind") == "train" and r.get(key) is not None
              and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None,
              title: str = "") -> Path:
    """One figure: a panel per loss term, total loss, lr, images/s, validation top-1; the runs overlaid."""
    runs = {label: read_metrics(d) for label, d in zip(labels or [Path(d).name for d in run_dirs], run_dirs)}
    terms = sorted({k for recs in runs.values() for r in recs if r.get("kind") == "train"
                    for k in r if k.startswith("loss/")})
    panels = [*terms, "loss", "lr", "images_per_s", "student_top1"]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, key in zip(axes.flat, panels):
        for i, (label, records) in enumerate(runs.items()):
            if key == "student_top1":
                x, y = eval_curve(records)
                ax.plot(x, y, marker="o", ms=3, color=colours(i % 10), label=label)
            else:
                x, y = train_series(records, key)
                ax.plot(x, y, color=colours(i % 10), label=label, lw=1)
        ax.set_title({"student_top1": "validation top-1 (%)", "images_per_s": "images/s", "loss": "total loss"}
                     .get(key, key), fontsize=9)
        ax.set_xlabel("epoch" if key == "student_top1" else "step", fontsize=8)
        ax.tick_params(labelsize=7)
        if key.startswith("loss"):
            ax.set_yscale("symlog", linthresh=1e-2)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = axes.flat[len(panels) - 1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(names) / 5), 1, 0.97 if title else 1))
    return save(fig, out)


def save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders holding metrics.jsonl")
    parser.add_argument("--out", default="curves.png", help="PNG file to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    try:
        path = plot_runs(args.run_dirs, args.out, title=args.title)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
