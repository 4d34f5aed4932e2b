"""The teacher cache's runs, once per configuration (in this process, or on every rank under `accelerate launch`):

  pass      launch/cache_teacher.py's main: K = classes, features stored, the run's views, 2 epochs
  live      the live teacher                                   \\  lr 1e-30: the student never moves (every
  rounded   the live teacher, outputs rounded as a record does  >  update is below its weights' fp32
  cached    --teacher.cache                                    /   resolution), so every step compares the
                                                                   teachers alone, on the same views
  learning  --teacher.cache at the real lr, checkpointed after the first step of epoch 2
  resumed   --resume from that checkpoint, to the end

Each run records every step's loss terms on every rank (<out>/terms-<run>-rank<r>.json); the runs'
folders hold metrics.jsonl and student.safetensors. One launch runs them all: a launch costs ~15 s of
imports on a small machine.
usage: equality_runner.py OUT VIEWS METHOD -- <config flags shared by every run>
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from pipeline.config import parse_args  # noqa: E402
from pipeline.methods import NetOutput  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402

def cache_teacher_module():
    spec = importlib.util.spec_from_file_location("cache_teacher", REPO / "launch" / "cache_teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recording(Trainer):
    """Keeps every step's loss terms as floats (a host read per step: fine in a test)."""

    def train_step(self, batch):
        terms = super().train_step(batch)
        self.recorded = getattr(self, "recorded", []) + [{k: float(v) for k, v in terms.items()}]
        return terms


class RoundedTeacher(Recording):
    """The live teacher with its outputs rounded as a cache record stores them: logits relative to their
    maximum, then fp16; features fp16. A cached run must equal this one to fp32 noise."""

    def teacher_forward(self, images):
        out = super().teacher_forward(images)
        relative = out.logits - out.logits.max(dim=1, keepdim=True).values
        return NetOutput(relative.half().float(), out.features.half().float())


def run(out: Path, name: str, trainer_class, flags: list[str], resume: str = "") -> Trainer:
    cfg, _ = parse_args(flags + ["--train.name", name])
    trainer = trainer_class(cfg, resume=resume)
    trainer.fit()
    rank = trainer.accelerator.process_index
    (out / f"terms-{name}-rank{rank}.json").write_text(json.dumps(getattr(trainer, "recorded", [])))
    return trainer


def resume_step(flags: list[str]) -> int:
    """The global step of the checkpoint the resumed run starts from: the first step of epoch 2."""
    return parse_args(flags)[0].train.steps_per_epoch + 1


def run_all(out: Path, views: int, method: str, flags: list[str]):
    out.mkdir(parents=True, exist_ok=True)
    cache = str(out / "cache")
    cache_teacher_module().main(flags + ["--teacher.cache", cache, "--teacher.cache_topk", "1000",
                                         "--teacher.cache_features", "true", "--views", str(views),
                                         "--batch-size", "32", "--method", method])
    runs = flags + ["--method", method, "--train.output_dir", str(out / "runs")]
    frozen = runs + ["--train.lr", "1e-30"]
    run(out, "live", Recording, frozen)
    run(out, "rounded", RoundedTeacher, frozen)
    trainer = run(out, "cached", Recording, frozen + ["--teacher.cache", cache])
    (out / "cached-built.json").write_text(json.dumps(
        {"teacher": trainer.teacher is not None, "teacher_fn": trainer.teacher_fn is not None}))
    resume_at = resume_step(flags)
    learning = runs + ["--teacher.cache", cache, "--train.checkpoint_every", str(resume_at)]
    trainer = run(out, "learning", Recording, learning)
    checkpoint = trainer.run_dir / "checkpoints" / f"step-{resume_at:09d}"
    run(out, "resumed", Recording, learning, resume=str(checkpoint))


if __name__ == "__main__":
    out_, views_, method_, sep, *flags_ = sys.argv[1:]
    assert sep == "--"
    run_all(Path(out_), int(views_), method_, flags_)
