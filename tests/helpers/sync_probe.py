"""Run the real Trainer under `accelerate launch` and record what the sync-free test checks.

Every Python-level torch.distributed collective is recorded with the global step and where it ran
(inside `train_step`, elsewhere in `train_epoch`, or outside the epoch); DDP's gradient all-reduce
runs in its C++ reducer and is not seen. A test method makes rank 1's loss NaN at global step 3 only;
the parameters and momentum buffers are saved around that step. Each rank writes <out>/rank<r>.pt.
"""
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.distributed.distributed_c10d as c10d  # noqa: E402

from pipeline.config import parse_args  # noqa: E402
from pipeline.methods.base import METHODS, Method  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402

NAN_STEP = 3
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor", "all_to_all",
               "all_to_all_single", "barrier", "monitored_barrier", "gather", "gather_object", "scatter",
               "scatter_object_list", "send", "recv", "isend", "irecv", "batch_isend_irecv")


class NaNOnRank1(Method):
    """No loss of its own, except a NaN on rank 1 at global step NAN_STEP (rank 0's loss stays finite)."""
    name = "test_nan_rank1"
    needs_teacher = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.calls = 0

    def forward(self, out):
        self.calls += 1
        bad = self.calls == NAN_STEP and dist.get_rank() == 1
        return {"nan_rank1": out.student.logits.sum() * (float("nan") if bad else 0.0)}


def main():
    out = Path(sys.argv[1])
    METHODS[NaNOnRank1.name] = NaNOnRank1
    cfg, args = parse_args(sys.argv[2:])
    trainer = Trainer(cfg, resume=args.resume)
    where = {"phase": "outside", "step": 0}
    calls, around_nan = [], {}

    def record(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            calls.append((where["phase"], trainer.global_step, name))
            return fn(*a, **k)
        return wrapper

    for name in COLLECTIVES:
        fn = getattr(c10d, name)
        setattr(c10d, name, record(name, fn))
        setattr(dist, name, getattr(c10d, name))

    def snapshot():
        inner = trainer.optimizer.optimizer
        return {"params": [p.detach().clone() for p in trainer.params],
                "momentum": [inner.state[p]["momentum_buffer"].clone() for p in trainer.params]}

    def phase(method, name):
        def run(*a, **k):
            before, where["phase"] = where["phase"], name
            if name == "step" and trainer.global_step + 1 == NAN_STEP:
                around_nan["before"] = snapshot()
            try:
                return method(*a, **k)
            finally:
                where["phase"] = before
                if name == "step" and trainer.global_step + 1 == NAN_STEP:
                    around_nan["after"] = snapshot()
        return run

    trainer.train_step = phase(trainer.train_step, "step")
    trainer.train_epoch = phase(trainer.train_epoch, "epoch")
    summary = trainer.fit()
    record_ = {"rank": trainer.accelerator.process_index, "world": trainer.accelerator.num_processes,
               "summary": summary, "calls": calls, "around_nan": around_nan, "final": snapshot()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(record_, out / f"rank{record_['rank']}.pt")


if __name__ == "__main__":
    main()
