"""bench/gpu_check.py on a machine without CUDA: it runs what can run (DALI's CPU decode against PIL on the
20 real JPEGs), skips every GPU check by name with the reason, writes both reports and exits 0."""
import json

import pytest
import torch

from bench import gpu_check

GPU_CHECKS = {"kernels", "compile_step:kd", "compile_step:icd+kd", "compile_step:dccd", "benchmark_step",
              "benchmark_loader", "peak_memory"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path; on a GPU node run bench/gpu_check.py itself")
def test_gpu_check_without_cuda_skips_gpu_checks_by_name(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == set(gpu_check.CHECKS)
    assert GPU_CHECKS <= set(report["summary"]["skip"])
    for name in GPU_CHECKS:
        assert "needs CUDA" in checks[name]["detail"], checks[name]
    assert report["summary"]["fail"] == []
    decode = checks["dali_decode"]  # runs on CPU: DALI's CPU decoder against PIL
    assert decode["status"] in ("pass", "skip"), decode
    if decode["status"] == "pass":
        assert len(decode["figures"]["mean_abs_diff"]) == 20 and decode["figures"]["worst"] <= gpu_check.DECODE_LIMIT
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "## Skipped" in markdown and all(f"- {name}:" in markdown for name in GPU_CHECKS)
