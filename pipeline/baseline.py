"""The student trained alone (`--method none`) beside a distilled run, so a run shows what distillation buys.

Like the demo's teacher, it is trained once and cached beside the teacher checkpoint: its SUMMARY as
JSON, keyed by a hash of everything that decides the student-alone result (student, data, schedule,
seed) and nothing else, so every method distilled into the same student reuses one baseline.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

from pipeline.batch import plan_batch
from pipeline.checkpoint import write_text_atomically
from pipeline.config import Config, to_dict

log = logging.getLogger(__name__)

# Keys that do not change what the student learns: outputs, logging, checkpointing, loader threads.
IGNORED_TRAIN_KEYS = ("output_dir", "name", "log_every", "eval_every", "keep_checkpoints", "checkpoint_every",
                      "dist_timeout_s", "skip_nonfinite", "baseline")


def baseline_config(cfg: Config) -> Config:
    """`cfg` with the distillation removed: the same student, data and schedule under `--method none`."""
    alone = copy.deepcopy(cfg)
    alone.method = "none"
    alone.train.baseline = False
    return alone


def baseline_key(cfg: Config, processes: int) -> str:
    """The batch keys enter as the batch they give on `processes` processes: per process (BatchNorm's
    statistics) and global (the lr and the steps)."""
    d = to_dict(cfg)
    train = {k: v for k, v in d["train"].items() if k not in IGNORED_TRAIN_KEYS + ("batch_size", "global_batch_size")}
    plan = plan_batch(cfg.train, processes)
    train["batch"] = [plan.per_process, plan.global_batch]
    data = {k: v for k, v in d["data"].items() if k != "workers"}
    text = json.dumps({"student": d["student"], "data": data, "train": train}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def baseline_cache_path(cfg: Config, processes: int = 1) -> Path:
    folder = Path(cfg.teacher.checkpoint).parent if cfg.teacher.checkpoint else Path(cfg.train.output_dir)
    return folder / f"student-alone-{cfg.student.arch}-{baseline_key(cfg, processes)}.json"


def student_alone(cfg: Config, processes: int = 1) -> dict:
    """The cached SUMMARY of the student trained alone, training it first when missing (collective: every
    process calls it). Returns {"stopped": True} when a signal stopped that run (its checkpoint is kept)."""
    from pipeline.trainer import Trainer  # the trainer imports this package's neighbours; import late

    path = baseline_cache_path(cfg, processes)
    if path.is_file():
        summary = json.loads(path.read_text())
        log.info("student alone (--method none): cached result %s (top-1 %.2f)", path, summary["student_top1"])
        return summary
    alone = baseline_config(cfg)
    alone.train.name = f"student-alone-{cfg.student.arch}-{baseline_key(cfg, processes)}"
    log.warning("student-alone result %s is missing: training the student alone (%s, --method none) once first",
                path, cfg.student.arch)
    trainer = Trainer(alone, resume="auto")
    summary = trainer.fit()
    if summary.get("stopped"):
        return summary
    if trainer.accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(summary, indent=1) + "\n")
        log.warning("student-alone result cached at %s", path)
    trainer.accelerator.wait_for_everyone()
    return summary


def what_distillation_buys(cfg: Config, alone: dict, distilled: dict) -> str:
    """Teacher, student alone and distilled student side by side (top-1 / top-5 on the validation set)."""
    def cell(summary, net="student"):
        top1, top5 = summary.get(f"{net}_top1"), summary.get(f"{net}_top5")
        return "-" if top1 is None else f"{top1:.2f} / {top5:.2f}" if top5 is not None else f"{top1:.2f} / -"
    gain = distilled["student_top1"] - alone["student_top1"]
    rows = [("teacher " + cfg.teacher.arch, cell(distilled, "teacher")),
            (f"student {cfg.student.arch} alone (--method none)", cell(alone)),
            (f"student {cfg.student.arch} distilled (--method {cfg.method})", cell(distilled))]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'network':<{width}}  top-1 / top-5 (%)"] + [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"distillation buys {gain:+.2f} points of top-1 over the student alone "
                 f"({distilled.get('val_images', '?')} validation images, one seed)")
    return "\n".join(lines)


def print_what_distillation_buys(cfg: Config, alone: dict, distilled: dict):
    print("\n" + what_distillation_buys(cfg, alone, distilled), flush=True)
