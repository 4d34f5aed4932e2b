"""Kernel report at ImageNet sizes: what each fused Triton kernel costs, and what the unfused reference moves.

    .venv/bin/python bench/kernel_report.py [--dtype bf16|fp32]

Runs on a machine without a GPU. Sizes (kernels._build.production_jobs): B = 256 per GPU, C = 1000
(kd, dkd; with --dtype bf16 the student's logits are bf16 and the teacher's fp32, as the trainer feeds them); icd's 128-d embeddings at B = 256 (one view) and 512 (two views); ccd's features at
d = 512 and 2048. (pipeline/methods/icd.py currently normalises its embeddings in fp32, so production
ICD runs the fp32 rows whatever the trainer's precision.)

Table 1, one row per @triton.jit launch (KernelSpec from each module's build_specs):
  regs / spill bytes / shared bytes: compiled for sm_90 with kernels/_build.py (ptxas -v on the PTX).
  bytes, FLOPs: the spec's own count of global-memory traffic and floating-point work.
  dots: the precision of the kernel's tl.dot calls (KernelSpec.dot_flops) and the H100 SXM dense peak
    that prices them: bf16 tensor cores 989 TFLOP/s, tf32 494, fp32 "ieee" (CUDA-core FMA) 67;
    "none" = no dots. FLOPs outside dots (exp, softmax algebra, ...) are priced at CUDA-core fp32, 67.
  floor = max(bytes / 3.35 TB/s, sum of FLOPs / their peak); bound: which term wins (mem / flop).

Table 2, one row per loss, forward + backward of one call as the trainer makes it (students' and
trainable heads' inputs require grad, teachers' do not), measured, not derived:
  reference: kernels.reference.<name>_loss runs on CPU tensors at these sizes under a
    TorchDispatchMode that sees every aten op, the backward's included. Each op that is not a view
    or a bare allocation counts as one kernel launch (as it would in eager CUDA) and moves the
    bytes of its tensor inputs plus outputs (numel * element size). Its FLOPs are matmul FLOPs from
    torch.utils.flop_counter (elementwise work is far below the bandwidth floor), priced at bf16 tensor
    cores for --dtype bf16 (the trainer's autocast runs them in bf16) and at fp32 CUDA cores for fp32
    (torch's default: TF32 off, and nothing in the pipeline turns it on).
  fused: kernels.<name>_loss with backend "triton" runs on fake tensors under the same counter;
    each kernels::* custom op contributes the launches and bytes of its module's KernelSpecs, and
    the torch ops around it (row-loss sums, grad_output scaling) are counted like the reference's.
    Torch ops inside a custom op's Python body (e.g. a host-side sum) are not seen. Its compute is
    its KernelSpecs' (priced as in table 1).
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be imported as compiled-mode JITFunctions

import kernels  # noqa: E402
from kernels import reference  # noqa: E402
from kernels._build import build_in_subprocess, production_jobs, size_kwargs, spec_key, specs_for  # noqa: E402
from kernels._spec import H100_PEAK_FLOPS  # noqa: E402

HBM_BYTES_PER_S = 3.35e12
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh"}


def floor_us(nbytes: float, compute_s: float) -> float:
    return max(nbytes / HBM_BYTES_PER_S, compute_s) * 1e6


def bound(nbytes: float, compute_s: float) -> str:
    return "mem" if nbytes / HBM_BYTES_PER_S >= compute_s else "flop"


def dots_label(spec) -> str:
    """e.g. "bf16@989+ieee_fp32@67": each dot precision the spec uses, with its peak in TFLOP/s."""
    return "+".join(f"{p}@{H100_PEAK_FLOPS[p] / 1e12:.0f}" for p in spec.dot_precision.split("+"))


class LaunchCounter(TorchDispatchMode):
    """Counts aten ops that launch a kernel and the bytes of their tensor inputs and outputs."""

    def __init__(self):
        super().__init__()
        self.launches, self.nbytes, self.custom_ops = 0, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "kernels":
            self.custom_ops.append(func.name())
            return out
        outs = [x for x in torch.utils._pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
        # prim.device, promote_types, ... return no tensor; views and allocations launch nothing.
        if func.namespace == "aten" and outs and not (func.is_view or func.overloadpacket.__name__ in _NO_KERNEL):
            ins = [x for x in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
            self.launches += 1
            self.nbytes += sum(x.numel() * x.element_size() for x in ins + outs)
        return out


def loss_inputs(name: str, sizes: dict, dtype: torch.dtype):
    """Inputs of one loss call and which of them train, as the trainer passes them."""
    g = torch.Generator().manual_seed(0)
    t_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(sizes.get("teacher_dtype"), dtype)
    rand = lambda *shape, dt=dtype: (torch.randn(*shape, generator=g) * 3).to(dt)  # noqa: E731
    d, B, C = sizes.get("d"), sizes["B"], sizes.get("C")
    if name == "kd":  # the teacher's logits in teacher_dtype (fp32 under bf16 autocast: the trainer casts them)
        return [rand(B, C), rand(B, C, dt=t_dtype), 4.0], [0]
    if name == "dkd":
        return [rand(B, C), rand(B, C), rand(B, C, dt=t_dtype), rand(B, C, dt=t_dtype), 4.0], [0, 1]
    if name == "icd":  # both embedding heads, log_scale and bias train
        z_s, z_t = (F.normalize(torch.randn(B, d, generator=g), dim=1).to(dtype) for _ in range(2))
        return [z_s, z_t, torch.tensor(1.0), torch.tensor(0.0)], [0, 1, 2, 3]
    if name == "ccd":  # teacher features are detached
        return [rand(B, d), rand(B, d, dt=t_dtype)], [0]
    raise KeyError(name)


def count(fn, inputs, trained, fake: bool):
    """(launches, bytes, matmul FLOPs, custom ops) of fn forward + backward."""
    def run():
        args = [x.detach().clone().requires_grad_(i in trained) if isinstance(x, torch.Tensor) else x
                for i, x in enumerate(inputs)]
        grad_out = torch.ones(())  # made before counting: the trainer's seed, not this loss's work
        with FlopCounterMode(display=False) as flops, LaunchCounter() as counter:
            loss = fn(*args)
            torch.autograd.grad(loss, [args[i] for i in trained], grad_out)
        return counter.launches, counter.nbytes, flops.get_total_flops(), counter.custom_ops

    if not fake:
        return run()
    with FakeTensorMode(allow_non_fake_inputs=True):
        return run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    dtype_name = parser.parse_args().dtype
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    start = time.time()

    jobs = production_jobs((dtype_name,))
    built = {(r["module"], r["key"]): r for r in build_in_subprocess(jobs, archs=(90,))}

    print(f"Fused Triton kernels, {dtype_name} inputs, sm_90 build; floor on H100 SXM: 3.35 TB/s, and per "
          f"FLOP kind (TFLOP/s) bf16 989, tf32 494, fp32 67 (ieee dots and all non-dot work)\n")
    head = (f"{'kernel':<22}{'sizes':<15}{'grid':>7}{'warps':>6}{'regs':>5}{'spill B':>8}{'smem B':>7}"
            f"{'MB':>8}{'GFLOP':>8}  {'dots@peak TFLOP/s':<22}{'floor us':>9}{'bound':>6}")
    print(head + "\n" + "-" * len(head))
    per_job = {}
    for name, sizes in jobs:
        specs = specs_for(name, sizes)
        per_job[(name, str(sizes))] = specs
        label = ", ".join(f"{k}={v}" for k, v in size_kwargs(name, sizes).items() if k not in ("dtype", "teacher_dtype"))
        for spec in specs:
            r = built[(name, spec_key(spec))]
            grid = "x".join(map(str, spec.grid))
            compute = spec.compute_seconds()
            print(f"{spec.name:<22}{label:<15}{grid:>7}{spec.num_warps:>6}{r['n_regs']:>5}{r['n_spills']:>8}"
                  f"{r['shared']:>7}{spec.bytes_moved / 1e6:>8.3f}{spec.flops / 1e9:>8.3f}  {dots_label(spec):<22}"
                  f"{floor_us(spec.bytes_moved, compute):>9.2f}{bound(spec.bytes_moved, compute):>6}")

    ref_peak = H100_PEAK_FLOPS["bf16" if dtype_name == "bf16" else "ieee_fp32"]
    print(f"\nPer loss, forward + backward: fused (Triton kernels + torch ops around them) vs unfused reference"
          f"\n(reference matmuls at {ref_peak / 1e12:.0f} TFLOP/s: {dtype_name} as the trainer runs them)\n")
    head = (f"{'loss':<6}{'sizes':<15}{'fused launches':>15}{'fused MB':>10}{'floor us':>10}"
            f"{'ref launches':>13}{'ref MB':>9}{'floor us':>10}{'ref/fused bytes':>16}")
    print(head + "\n" + "-" * len(head))
    kernels.set_backend("triton")
    for name, sizes in jobs:
        specs = per_job[(name, str(sizes))]
        inputs, trained = loss_inputs(name, sizes, dtype)
        ref_launches, ref_bytes, ref_flops, _ = count(getattr(reference, f"{name}_loss"), inputs, trained, fake=False)
        glue_launches, glue_bytes, _, ops = count(getattr(kernels, f"{name}_loss"), inputs, trained, fake=True)
        assert ops, f"kernels.{name}_loss ran no kernels:: custom op"
        fused_bytes = glue_bytes + sum(s.bytes_moved for s in specs)
        fused_compute = sum(s.compute_seconds() for s in specs)
        label = ", ".join(f"{k}={v}" for k, v in size_kwargs(name, sizes).items() if k not in ("dtype", "teacher_dtype"))
        print(f"{name:<6}{label:<15}{len(specs) + glue_launches:>15}{fused_bytes / 1e6:>10.3f}"
              f"{floor_us(fused_bytes, fused_compute):>10.2f}{ref_launches:>13}{ref_bytes / 1e6:>9.3f}"
              f"{floor_us(ref_bytes, ref_flops / ref_peak):>10.2f}{ref_bytes / fused_bytes:>16.1f}")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
