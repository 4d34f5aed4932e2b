"""bench/gpu_check.py on a machine without CUDA: it runs what can run (DALI's CPU decoder on the generated
datasets and the 20 real JPEGs), lists every skipped check by name with the reason, writes both reports and
exits 0; and its DDP worker (bench/gpu_check_ddp.py) runs in one CPU process."""
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
