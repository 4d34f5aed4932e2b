"""bench/gpu_check.py's DDP step, one process per GPU: `accelerate launch --multi_gpu --num_processes N
bench/gpu_check_ddp.py OUT "SPEC;SPEC..." -- <launch/imagenet.py flags>` (a SPEC is `--method` plus its own
flags, e.g. `crd+kd --crd.shared_negatives true`).

For each spec, the real `Trainer.train_step` (pipeline/benchmark.BenchmarkTrainer: a synthetic batch made once
on the device, a random teacher) compiled as the trainer compiles it, under accelerate's bf16 autocast and DDP
(NCCL), with the fused SGD: WARMUP steps (compilation, DDP's first iterations, whose runtime statistics read
CUDA events), then STEADY steps with `torch.cuda.set_sync_debug_mode("error")` (any host sync raises) and
dynamo's `error_on_recompile`, then one step with a NaN pixel on the last process, which must leave the
whole state (bench/skipped_step.full_state) bitwise as it was. Each process records its device mapping (host,
LOCAL_RANK, accelerator device, current CUDA device, where the parameters and the batch are) and writes
OUT/rank<r>.json. `run_specs` runs the same in-process (one process; the CPU test of gpu_check calls it).
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

WARMUP, STEADY = 11, 3


def device_mapping(trainer, batch: dict) -> dict:
    cuda = torch.cuda.is_available()
    return {"host": socket.gethostname(), "rank": trainer.accelerator.process_index,
            "local_rank": trainer.accelerator.local_process_index, "env_local_rank": os.environ.get("LOCAL_RANK"),
            "device": str(trainer.accelerator.device), "current_cuda_device": torch.cuda.current_device() if cuda else None,
            "parameters": sorted({str(p.device) for p in trainer.distiller.parameters()}),
            "batch": str(batch["images"].device)}


def check_spec(spec: str, flags: list[str]) -> tuple[dict, dict]:
    """(this spec's record, the device mapping) for this process."""
    from bench.skipped_step import differing, full_state
    from pipeline.benchmark import BenchmarkTrainer
    from pipeline.config import parse_args

    cfg, _ = parse_args(flags + ["--method", *spec.split()])
    record: dict = {"spec": spec}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.output_dir, cfg.train.name = tmp, "gpu_check"
        trainer = BenchmarkTrainer(cfg)
        batch = trainer.synthetic_batch()
        cuda = trainer.accelerator.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        breaks = torch._dynamo.utils.counters["graph_break"]
        before_breaks = sum(breaks.values())
        start = time.perf_counter()
        losses = [trainer.train_step(batch) for _ in range(WARMUP)]
        sync()
        record["warmup_s"] = time.perf_counter() - start
        record["graph_breaks"] = sum(breaks.values()) - before_breaks
        with torch._dynamo.config.patch(error_on_recompile=True):
            if cuda:
                torch.cuda.set_sync_debug_mode("error")
            try:
                start = time.perf_counter()
                losses += [trainer.train_step(batch) for _ in range(STEADY)]
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
            sync()
        record["steady_ms"] = 1e3 * (time.perf_counter() - start) / STEADY
        record["finite"] = all(math.isfinite(v) for terms in losses for v in torch.stack(list(terms.values())).tolist())
        before = full_state(trainer)
        poisoned = {**batch, "images": batch["images"].clone()}
        if trainer.accelerator.process_index == trainer.accelerator.num_processes - 1:
            poisoned["images"].view(-1)[0] = float("nan")
        trainer.train_step(poisoned)
        record["skipped_step_changed"] = differing(before, full_state(trainer))
        record["skipped"] = trainer.nonfinite.read() is not None
        mapping = device_mapping(trainer, batch)
        if trainer.writer is not None:
            trainer.writer.close()
    return record, mapping


def run_specs(specs: list[str], flags: list[str]) -> dict:
    out = {"specs": {}, "mapping": None}
    for spec in specs:
        try:
            out["specs"][spec], out["mapping"] = check_spec(spec, flags)
        except Exception as e:  # noqa: BLE001 (recorded; the other specs still run)
            out["specs"][spec] = {"spec": spec, "error": f"{type(e).__name__}: {str(e).strip()[:500]}",
                                  "traceback": traceback.format_exc()[-3000:]}
        torch._dynamo.reset()
    return out


def main():
    out, specs, sep, *flags = sys.argv[1:]
    assert sep == "--", "usage: gpu_check_ddp.py OUT 'SPEC;SPEC' -- <flags>"
    record = run_specs(specs.split(";"), flags)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
