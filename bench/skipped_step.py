"""A skipped step leaves every parameter and buffer as it was, and the run goes on as if it had never run.

    .venv/bin/python bench/skipped_step.py OUT [--methods kd,crd+kd] -- <launch/imagenet.py flags>
    accelerate launch --multi_gpu --num_processes N bench/skipped_step.py OUT -- <flags>

For each method, run A trains one epoch of `train.steps_per_epoch` steps through the real
`Trainer.train_epoch` (train.skip_nonfinite on) with two faults on the last process only:
  step NAN_STEP:  one NaN pixel in its images (a NaN loss; BatchNorm statistics, CRD's banks and Z are
                  poisoned by the forward on that process, or on every process where rows are gathered);
  step INF_STEP:  a finite loss, but +inf in one element of the student classifier's weight gradient
                  (hooked before DDP's all-reduce, which carries it to every process).
Run B trains the same epoch with those two steps left out (their batches drawn, no step taken, the lr
schedule advanced as the step count is). Compared BITWISE on every process: the whole state (every
parameter and buffer of the student, the teacher and the methods, every optimizer state tensor; and the
lr at the end) just before and just after each faulty step of A, and at the end of A and of B. Also recorded: which buffers the faulty step's forward
had changed before they were put back (so a restore that does nothing cannot pass). Each process writes
OUT/rank<r>.json; `check_skipped_steps` returns the same record in-process (tests, bench/gpu_check.py).
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

NAN_STEP, INF_STEP = 1, 4  # the first step (Z is set then, momentum is still zero) and one mid-window


def full_state(trainer) -> dict[str, torch.Tensor]:
    """Every tensor the run's future depends on, by name (copies)."""
    state = {f"distiller.{k}": v.detach().clone() for k, v in trainer.distiller.state_dict(keep_vars=True).items()}
    state.update({f"distiller.{n} (non-persistent)": b.clone() for n, b in trainer.distiller.named_buffers()
                  if f"distiller.{n}" not in state})
    if trainer.teacher is not None:
        state.update({f"teacher.{k}": v.detach().clone() for k, v in trainer.teacher.state_dict().items()})
    names = {id(p): n for n, p in trainer.distiller.named_parameters()}
    for p, s in trainer.optimizer.optimizer.state.items():
        state.update({f"optimizer.{names[id(p)]}.{k}": v.clone() for k, v in s.items() if torch.is_tensor(v)})
    state["optimizer.lr"] = torch.tensor([g["lr"] for g in trainer.optimizer.param_groups], dtype=torch.float64)
    return state


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors differ in any bit (or exist on one side only)."""
    return sorted(n for n in a.keys() | b.keys() if n not in a or n not in b or not torch.equal(bits(a[n]), bits(b[n])))


@contextmanager
def inf_gradient(trainer, on: bool):
    """+inf in one element of the student classifier's weight gradient, before DDP averages it."""
    weight = trainer.distiller.student.model.get_classifier().weight

    def poison(grad):
        grad = grad.clone()
        grad.view(-1)[0] = float("inf")
        return grad
    handle = weight.register_hook(poison) if on else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def run(cfg, faulty: bool) -> dict:
    """One epoch through Trainer.train_epoch. faulty: run A (faults injected, state recorded around them);
    else run B (the faulty steps left out)."""
    from pipeline.trainer import Trainer

    trainer = Trainer(cfg)
    last = trainer.accelerator.process_index == trainer.accelerator.num_processes - 1
    step, restore, record, previous = trainer.train_step, trainer.restore_if_skipped, {}, {}

    def restore_watched(skipped):  # what the faulty step's forward changed, before it is put back
        k = trainer.global_step + 1
        if k in (NAN_STEP, INF_STEP):
            record[f"changed_by_forward_{k}"] = differing(record[f"before_{k}"], full_state(trainer))
        restore(skipped)

    def train_step(batch):
        k = trainer.global_step + 1
        if k not in (NAN_STEP, INF_STEP):
            previous["terms"] = step(batch)
            return previous["terms"]
        if not faulty:  # run B: the step never happens; the loop counts it and the schedule follows the count
            trainer.scheduler.step_update(k)
            return previous.get("terms") or {"none": torch.zeros((), device=batch["images"].device)}
        record[f"before_{k}"] = full_state(trainer)
        if k == NAN_STEP and last:
            batch = {**batch, "images": batch["images"].clone()}
            batch["images"].view(-1)[0] = float("nan")
        with inf_gradient(trainer, on=k == INF_STEP and last):
            previous["terms"] = step(batch)
        after = full_state(trainer)
        before = record.pop(f"before_{k}")
        for state in (before, after):  # the lr follows the step count, which a skipped step advances too
            state.pop("optimizer.lr")
        record[f"after_{k}"] = differing(before, after)
        record[f"nonfinite_after_{k}"] = sorted(n for n, t in after.items()
                                                if t.is_floating_point() and not torch.isfinite(t).all())
        return previous["terms"]

    trainer.train_step, trainer.restore_if_skipped = train_step, restore_watched
    trainer.train_epoch()
    if trainer.writer is not None:
        trainer.writer.close()
    record.update(end=full_state(trainer), skipped_steps=trainer.skipped_steps, steps=trainer.global_step,
                  rank=trainer.accelerator.process_index, world=trainer.accelerator.num_processes)
    return record


def check_skipped_steps(flags: list[str], methods: list[str]) -> dict[str, dict]:
    """{method: record} for this process (see the module docstring); `flags` as launch/imagenet.py takes them."""
    from pipeline.config import parse_args

    out = {}
    for method in methods:
        name = method.replace("+", "_")
        runs = {}
        for label, faulty in (("a", True), ("b", False)):
            cfg, _ = parse_args(flags + ["--method", method, "--train.name", f"{name}-{label}", "--train.epochs", "1",
                                         "--train.skip_nonfinite", "true"])
            runs[label] = run(cfg, faulty)
        a, b = runs["a"], runs["b"]
        out[method] = {k: v for k, v in a.items() if k != "end"} | {
            "end_differs_from_run_without_the_steps": differing(a["end"], b["end"]),
            "compared": len(a["end"]), "b_steps": b["steps"], "b_skipped_steps": b["skipped_steps"]}
    return out


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--methods", default="kd,icd+kd,dccd,crd+kd,slkd")
    args, flags = parser.parse_known_args()
    flags = flags[1:] if flags[:1] == ["--"] else flags
    record = check_skipped_steps(flags, args.methods.split(","))
    rank = next(iter(record.values()))["rank"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
