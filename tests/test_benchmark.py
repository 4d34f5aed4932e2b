"""`launch/imagenet.py --benchmark step|loader` on CPU with tiny models and few steps: finite figures, one
parsable BENCHMARK line, and the FLOPs figure against a count written out from the layer shapes."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import timm
import torch

from pipeline.benchmark import run_benchmark
from pipeline.config import parse_args

SIZE, BATCH = 32, 4



def bench_args(mode: str) -> argparse.Namespace:
    return argparse.Namespace(benchmark=mode, peak_tflops=2.0, benchmark_steps=2, benchmark_warmup=1)


def tiny_cfg(tmp_path, method="kd"):
    cfg, _ = parse_args(["--method", method, "--teacher.arch", "resnet10t", "--teacher.checkpoint", "",
                         "--student.arch", "resnet10t", "--data.image_size", str(SIZE), "--data.val_resize", str(SIZE),
                         "--data.backend", "torch",
                         "--data.per_class", "4", "--data.workers", "0", "--train.batch_size", str(BATCH),
                         "--train.compile", "off", "--data.demo_dir", ".data/fashion_mnist_jpeg"])
    return cfg


def printed_result(capsys) -> dict:
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("BENCHMARK ")]
    assert len(lines) == 1
    return json.loads(lines[0][len("BENCHMARK "):])


def conv_and_linear_flops(model: torch.nn.Module, size: int) -> tuple[int, int]:
    """Forward FLOPs of one image, 2 * multiply-adds of every Conv2d and Linear from their shapes, and
    the first convolution's share (its input, the image, needs no gradient)."""
    counts = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            counts.append(2 * output.numel() * module.in_channels // module.groups * kh * kw)
        else:
            counts.append(2 * module.in_features * module.out_features)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return sum(counts), counts[0]


def test_benchmark_step_reports_finite_figures_and_the_flops_of_the_step(tmp_path, capsys):
    result = run_benchmark(tiny_cfg(tmp_path), bench_args("step"))
    assert printed_result(capsys) == json.loads(json.dumps(result))
    assert {"mode", "method", "teacher", "student", "batch_size", "images_per_s", "flops_per_image", "tflops",
            "peak_fraction", "peak_memory_mb", "time_split_ms"} <= set(result)
    assert result["mode"] == "step" and result["batch_size"] == BATCH
    figures = [result["images_per_s"], result["tflops"], result["peak_fraction"], result["peak_memory_mb"]]
    assert all(math.isfinite(x) and x > 0 for x in figures)
    assert set(result["time_split_ms"]) == {"teacher_forward", "student_forward_backward", "loss_terms",
                                            "optimizer", "other"}
    assert all(math.isfinite(v) for v in result["time_split_ms"].values())
    assert result["peak_fraction"] == pytest.approx(result["tflops"] / 2.0)
    # kd: teacher forward + student forward + student backward (input and weight gradients of every layer,
    # except the first convolution, whose input is the image); the losses have no matmuls.
    forward, stem = conv_and_linear_flops(timm.create_model("resnet10t", num_classes=10), SIZE)
    assert result["flops_per_image"] == forward + 3 * forward - stem


def test_benchmark_step_from_a_teacher_cache_has_no_teacher_forward(tmp_path, capsys):
    """--teacher.cache without a cache there: synthetic records of a pass's layout; the step's FLOPs are the
    student's alone (the kd loss has no matmuls) and the split names the rebuild instead of the forward."""
    cfg = tiny_cfg(tmp_path)
    cfg.teacher.cache, cfg.teacher.cache_topk = str(tmp_path / "no-cache"), 3
    result = run_benchmark(cfg, bench_args("step"))
    forward, stem = conv_and_linear_flops(timm.create_model("resnet10t", num_classes=10), SIZE)
    assert result["flops_per_image"] == 3 * forward - stem
    assert "teacher_forward" not in result["time_split_ms"] and result["time_split_ms"]["teacher_from_cache"] > 0
    from pipeline.benchmark import BenchmarkTrainer

    cfg = tiny_cfg(tmp_path, "icd+kd")
    cfg.teacher.cache, cfg.teacher.cache_topk, cfg.train.output_dir = str(tmp_path / "no-cache"), 3, str(tmp_path)
    trainer = BenchmarkTrainer(cfg)
    batch = trainer.synthetic_batch()
    assert trainer.teacher is None and batch["teacher_values"].shape == (BATCH, 3)
    assert batch["teacher_features"].shape == (BATCH, 512) and batch["teacher_tail"].shape == (BATCH, 1)
    assert (batch["teacher_values"][:, 0] == 0).all() and (batch["teacher_values"].diff(dim=1) <= 0).all()
    assert all(len(set(row.tolist())) == 3 for row in batch["teacher_classes"])  # distinct classes per row
    assert all(torch.isfinite(v) for v in trainer.train_step(batch).values())


def test_benchmark_step_of_a_two_view_method_with_heads(tmp_path, capsys):
    result = run_benchmark(tiny_cfg(tmp_path, "dccd"), bench_args("step"))
    assert result["views"] == 2 and math.isfinite(result["images_per_s"]) and result["images_per_s"] > 0
    forward, stem = conv_and_linear_flops(timm.create_model("resnet10t", num_classes=10), SIZE)
    assert result["flops_per_image"] > 2 * (4 * forward - stem)  # two views through both nets, plus M_s


def test_benchmark_loader_reports_finite_figures(tmp_path, capsys, demo_root):
    result = run_benchmark(tiny_cfg(tmp_path), bench_args("loader"))
    assert printed_result(capsys)["mode"] == "loader"
    assert math.isfinite(result["images_per_s"]) and result["images_per_s"] > 0
    assert 0 < result["time_split_ms"]["data_wait"] < math.inf
    assert result["flops_per_image"] is None and result["peak_memory_mb"] > 0


def test_grouped_convolution_backward_costs_twice_its_forward():
    """torch's formula counts a depthwise layer's backward 64x too high; ours: input + weight gradients."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.benchmark import conv_backward_flops

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)  # real CPU tensors: a few kFLOP, and no
    x = torch.randn(2, 64, 14, 14, requires_grad=True)       # meta-device autograd to depend on test order
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}) as c:
        conv(x).sum().backward()
    forward = 2 * (2 * 64 * 14 * 14) * 9  # one 3x3 multiply-add per output element
    assert c.get_total_flops() == 3 * forward


def test_teacher_weights_of_another_arch_give_a_random_teacher_of_the_benchmarked_arch(tmp_path, tiny_teacher):
    from pipeline.benchmark import BenchmarkTrainer

    cfg = tiny_cfg(tmp_path)
    cfg.teacher.arch, cfg.teacher.checkpoint = "resnet18", str(tiny_teacher)  # a resnet10t file, as the demo's
    cfg.train.output_dir = str(tmp_path)
    trainer = BenchmarkTrainer(cfg)
    assert trainer.teacher.feature_dim == timm.create_model("resnet18", num_classes=10).num_features


def test_benchmark_step_sweeps_the_per_process_batch(tmp_path, capsys):
    args = bench_args("step")
    args.benchmark_batches = [2, 4]
    result = run_benchmark(tiny_cfg(tmp_path), args)
    assert printed_result(capsys) == json.loads(json.dumps(result))
    rows = result["sweep"]
    assert [r["batch_size"] for r in rows] == [2, 4]
    for r in rows:  # images/s counts the batch's samples per step
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0 and r["peak_memory_mb"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / (r["step_ms"] / 1e3), rel=1e-9)
    best = max(r["images_per_s"] for r in rows)
    saturated = [r["batch_size"] for r in rows if r["images_per_s"] >= 0.9 * best]
    assert result["saturates_at"] == saturated[0]


def test_saturation_is_the_smallest_batch_within_90_percent_of_the_best():
    from pipeline.benchmark import saturated_batch

    rows = [{"batch_size": 32, "images_per_s": 100.0}, {"batch_size": 64, "images_per_s": 185.0},
            {"batch_size": 128, "images_per_s": 200.0}, {"batch_size": 256, "images_per_s": 205.0}]
    assert saturated_batch(rows) == 64  # 185 >= 0.9 x 205 = 184.5 > 100
    assert saturated_batch(rows[:1] + [{"batch_size": 64, "error": "out of memory"}]) == 32
    assert saturated_batch([{"batch_size": 32, "error": "out of memory"}]) is None


def test_benchmark_batches_flag_parses_and_rejects_bad_lists():
    _, args = parse_args(["--benchmark", "step", "--benchmark-batches", "32,64,128,256"])
    assert args.benchmark_batches == [32, 64, 128, 256]
    for bad in ("32,x", "0,8", ""):
        with pytest.raises(SystemExit):
            parse_args(["--benchmark-batches", bad])
