"""Under `accelerate launch` (2 processes): train each method a few steps with the real Trainer, then
resume the stateful ones for a second epoch, and write what the test checks to <out>/rank<r>.json.

One launch runs every method (a launch costs ~20 s of imports on a small machine); each Trainer
still goes through the multi-process path: DDP, gathers, checkpoint, resume.
usage: e2e_runner.py OUT METHODS RESUMED -- <config flags shared by every run>
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pipeline import checkpoint  # noqa: E402
from pipeline.config import parse_args  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402


def method_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every parameter and buffer the methods own, by checkpoint key."""
    state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items() if k.startswith("methods.")}


def checksums(state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.double().sum()) + float(v.double().abs().sum()) for k, v in state.items()}


def main():
    out, methods, resumed, sep, *flags = sys.argv[1:]
    assert sep == "--"
    record = {}
    for method in methods.split(","):
        name = method.replace("+", "_")
        cfg, _ = parse_args(flags + ["--method", method, "--train.name", name, "--train.epochs", "1"])
        trainer = Trainer(cfg)
        initial = method_state(trainer)
        summary = trainer.fit()
        entry = {"summary": summary, "state": checksums(method_state(trainer))}
        if method in resumed.split(","):
            newest = checkpoint.find_latest(trainer.run_dir)
            saved = {k: v for k, v in load_file(str(newest / "model.safetensors")).items() if k.startswith("methods.")}
            cfg.train.epochs = 2
            trainer = Trainer(cfg, resume="auto")
            loaded = method_state(trainer)
            entry["resume"] = {
                "checkpoint": newest.name,
                "keys": sorted(saved),
                "loaded_equals_checkpoint": sorted(k for k in saved if torch.equal(loaded[k], saved[k])),
                "checkpoint_differs_from_init": sorted(k for k in saved if not torch.equal(initial[k], saved[k])),
                "optimizer_states": len(trainer.optimizer.state),
                "parameters": sum(1 for _ in trainer.model.parameters()),
                "start": [trainer.epoch, trainer.global_step],
                "summary": trainer.fit(),
                "state": checksums(method_state(trainer)),
            }
        record[method] = entry
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
