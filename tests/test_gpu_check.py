"""bench/gpu_check.py on a machine without CUDA: it runs what can run (DALI's CPU decoder on the generated
datasets and the 20 real JPEGs), lists every skipped check by name with the reason, writes both reports and
exits 0; and its DDP worker (bench/gpu_check_ddp.py) runs in one CPU process."""
import argparse
import json

import pytest
import torch

from bench import gpu_check
from bench.gpu_check_ddp import run_specs

CUDA_ONLY = {"kernels", "crd_draws_compiled", *(f"ddp_step:{s}" for s in gpu_check.QUICK_DDP_SPECS),
             "device_mapping", "dali_memory", "benchmark_step", "benchmark_sweep", "benchmark_loader", "peak_memory"}
QUICK_LEFT_OUT = {*(f"compile_step:{m}" for m in gpu_check.COMPILE_METHODS),
                  *(f"ddp_step:{s}" for s in gpu_check.DDP_SPECS if s not in gpu_check.QUICK_DDP_SPECS)}
RUN_ON_CPU = {"dali_decode", "dali_two_views", "dali_validation", "dali_webdataset", "dali_resume_mid_epoch",
              "dali_awkward_jpegs"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path; on a GPU node run bench/gpu_check.py itself")
def test_gpu_check_without_cuda_runs_what_it_can_and_names_every_skipped_check(tmp_path):
    # skipped_step's CPU path is tests/test_skipped_steps.py's (the same function, more methods)
    assert gpu_check.main(["--out", str(tmp_path), "--quick", "--skip", "skipped_step"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == list(gpu_check.CHECKS)
    assert CUDA_ONLY | QUICK_LEFT_OUT | RUN_ON_CPU | {"skipped_step"} == set(gpu_check.CHECKS)  # every check named
    assert set(report["summary"]["skip"]) == CUDA_ONLY | QUICK_LEFT_OUT | {"skipped_step"}
    for name in CUDA_ONLY:
        assert "needs CUDA" in checks[name]["detail"], checks[name]
    for name in QUICK_LEFT_OUT:
        assert "--quick" in checks[name]["detail"], checks[name]
    assert checks["skipped_step"]["detail"] == "--skip"
    assert report["summary"]["fail"] == [] and set(report["summary"]["pass"]) == RUN_ON_CPU
    assert all("DALI CPU decoder" in checks[n]["detail"] for n in RUN_ON_CPU - {"dali_decode"})
    decode = checks["dali_decode"]  # DALI's CPU decoder against PIL on the 20 real JPEGs
    assert len(decode["figures"]["mean_abs_diff"]) == 20 and decode["figures"]["worst"] <= gpu_check.DECODE_LIMIT
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "## Skipped" in markdown and all(f"- {name}:" in markdown for name in report["summary"]["skip"])


def test_ddp_worker_in_one_cpu_process():
    flags = ["--teacher.arch", "resnet10t", "--student.arch", "resnet10t", "--teacher.checkpoint", "",
             "--data.image_size", "16", "--data.val_resize", "16", "--train.batch_size", "4", "--train.compile", "off",
             "--crd.nce_k", "64", "--data.per_class", "10"]
    record = run_specs(["kd", "crd+kd --crd.shared_negatives true"], flags)
    for spec, r in record["specs"].items():
        assert "error" not in r, r.get("traceback")
        assert r["finite"] and r["skipped"] and r["skipped_step_changed"] == [], (spec, r)
        assert r["graph_breaks"] == 0 and r["steady_ms"] > 0
    assert record["mapping"]["device"] == "cpu" and record["mapping"]["parameters"] == ["cpu"]
    assert record["mapping"]["batch"] == "cpu" and record["mapping"]["rank"] == 0


def fake_ddp_launch(monkeypatch, records, gpus):
    """The verdicts of the GPU-only checks, fed the records an 8-GPU launch would write."""
    monkeypatch.setattr(gpu_check, "gpu_count", lambda: gpus)
    monkeypatch.setitem(gpu_check._ddp, "records", records)
    return argparse.Namespace(quick=False, out="unused", ddp_timeout=1)


def rank_record(rank, host="node1", local=None, **spec):
    local = rank if local is None else local
    device = f"cuda:{local}"
    good = {"spec": "kd", "warmup_s": 30.0, "steady_ms": 12.0, "graph_breaks": 0, "finite": True,
            "skipped_step_changed": [], "skipped": True}
    return {"specs": {"kd": {**good, **spec}},
            "mapping": {"host": host, "rank": rank, "local_rank": local, "env_local_rank": str(local), "device": device,
                        "current_cuda_device": local, "parameters": [device], "batch": device}}


def test_ddp_step_and_device_mapping_verdicts(monkeypatch):
    args = fake_ddp_launch(monkeypatch, [rank_record(r) for r in range(8)], gpus=8)
    assert gpu_check.check_ddp_step("kd", args)["status"] == "pass"
    assert gpu_check.check_device_mapping(args)["status"] == "pass"
    bad = {"a buffer changed by the skipped step": {"skipped_step_changed": ["distiller.z"]},
           "not skipped": {"skipped": False}, "a NaN loss": {"finite": False},
           "a sync": {"error": "RuntimeError: called a synchronizing CUDA operation"}}
    for what, spec in bad.items():
        records = [rank_record(r, **(spec if r == 5 else {})) for r in range(8)]
        result = gpu_check.check_ddp_step("kd", fake_ddp_launch(monkeypatch, records, gpus=8))
        assert result["status"] == "fail" and "rank 5" in result["detail"], what
    two_on_one = [rank_record(r, local=r if r != 3 else 2) for r in range(8)]  # ranks 2 and 3 both on cuda:2
    two_on_one[3]["mapping"]["local_rank"] = 3  # its LOCAL_RANK says 3, its device says 2
    result = gpu_check.check_device_mapping(fake_ddp_launch(monkeypatch, two_on_one, gpus=8))
    assert result["status"] == "fail" and "rank 3" in result["detail"] and "share a GPU" in result["detail"]
    result = gpu_check.check_device_mapping(fake_ddp_launch(monkeypatch, [rank_record(r) for r in range(7)], gpus=8))
    assert result["status"] == "fail" and "7 rank records for 8 GPUs" in result["detail"]
    two_nodes = [rank_record(r, host=f"node{r // 4}", local=r % 4) for r in range(8)]  # 2 nodes x 4 GPUs
    assert gpu_check.check_device_mapping(fake_ddp_launch(monkeypatch, two_nodes, gpus=8))["status"] == "pass"
