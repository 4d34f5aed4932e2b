"""Kernel report at ImageNet sizes: what each fused Triton kernel costs, and what the unfused reference moves.

    .venv/bin/python bench/kernel_report.py [--dtype bf16|fp32]

Runs on a machine without a GPU. Sizes: B = 256 per GPU, C = 1000 (kd, dkd); d = 512 and 2048
(icd, ccd; passed to each build_specs under its own name, e.g. icd's D).

Table 1, one row per @triton.jit launch (KernelSpec from each module's build_specs):
  regs / spill bytes / shared bytes: compiled for sm_90 with kernels/_build.py (ptxas -v on the PTX).
  bytes, FLOPs: the spec's own count of global-memory traffic and floating-point work.
  floor = max(bytes / 3.35 TB/s, FLOPs / 989 TFLOP/s): H100 SXM HBM3 bandwidth, dense bf16 peak.

Table 2, one row per loss, forward + backward of one call as the trainer makes it (students' and
trainable heads' inputs require grad, teachers' do not), measured, not derived:
  reference: kernels.reference.<name>_loss runs on CPU tensors at these sizes under a
    TorchDispatchMode that sees every aten op, the backward's included. Each op that is not a view
    or a bare allocation counts as one kernel launch (as it would in eager CUDA) and moves the
    bytes of its tensor inputs plus outputs (numel * element size). Its FLOPs are matmul FLOPs from
    torch.utils.flop_counter (elementwise work is far below the bandwidth floor).
  fused: kernels.<name>_loss with backend "triton" runs on fake tensors under the same counter;
    each kernels::* custom op contributes the launches and bytes of its module's KernelSpecs, and
    the torch ops around it (row-loss sums, grad_output scaling) are counted like the reference's.
    Torch ops inside a custom op's Python body (e.g. a host-side sum) are not seen.
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
from kernels._build import available_modules, build_in_subprocess, size_kwargs, spec_key, specs_for  # noqa: E402

HBM_BYTES_PER_S = 3.35e12
PEAK_FLOPS = 989e12
B, C, DIMS = 256, 1000, (512, 2048)
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh"}


def floor_us(nbytes: float, flops: float) -> float:
    return max(nbytes / HBM_BYTES_PER_S, flops / PEAK_FLOPS) * 1e6


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
    rand = lambda *shape: (torch.randn(*shape, generator=g) * 3).to(dtype)  # noqa: E731
    d = sizes.get("d")
    if name == "kd":
        return [rand(B, C), rand(B, C), 4.0], [0]
    if name == "dkd":
        return [rand(B, C), rand(B, C), rand(B, C), rand(B, C), 4.0], [0, 1]
    if name == "icd":  # both embedding heads, log_scale and bias train
        z_s, z_t = (F.normalize(torch.randn(B, d, generator=g), dim=1).to(dtype) for _ in range(2))
        return [z_s, z_t, torch.tensor(1.0), torch.tensor(0.0)], [0, 1, 2, 3]
    if name == "ccd":  # teacher features are detached
        return [rand(B, d), rand(B, d)], [0]
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

    jobs = []
    for name in available_modules():
        for d in DIMS if name in ("icd", "ccd") else (None,):
            sizes = {"B": B, "C": C, "dtype": dtype_name} | ({"d": d} if d else {})
            jobs.append((name, sizes))
    built = {(r["module"], r["key"]): r for r in build_in_subprocess(jobs, archs=(90,))}

    print(f"Fused Triton kernels, {dtype_name} inputs, sm_90 build; floor on H100 (3.35 TB/s, 989 TFLOP/s)\n")
    head = f"{'kernel':<26}{'sizes':<22}{'grid':>8}{'warps':>6}{'regs':>6}{'spill B':>8}{'smem B':>8}{'MB':>9}{'GFLOP':>9}{'floor us':>10}"
    print(head + "\n" + "-" * len(head))
    per_job = {}
    for name, sizes in jobs:
        specs = specs_for(name, sizes)
        per_job[(name, str(sizes))] = specs
        label = ", ".join(f"{k}={v}" for k, v in size_kwargs(name, sizes).items() if k != "dtype")
        for spec in specs:
            r = built[(name, spec_key(spec))]
            grid = "x".join(map(str, spec.grid))
            print(f"{spec.name:<26}{label:<22}{grid:>8}{spec.num_warps:>6}{r['n_regs']:>6}{r['n_spills']:>8}"
                  f"{r['shared']:>8}{spec.bytes_moved / 1e6:>9.3f}{spec.flops / 1e9:>9.3f}"
                  f"{floor_us(spec.bytes_moved, spec.flops):>10.2f}")

    print("\nPer loss, forward + backward: fused (Triton kernels + torch ops around them) vs unfused reference\n")
    head = (f"{'loss':<6}{'sizes':<22}{'fused launches':>15}{'fused MB':>10}{'floor us':>10}"
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
        fused_flops = sum(s.flops for s in specs)
        label = ", ".join(f"{k}={v}" for k, v in size_kwargs(name, sizes).items() if k != "dtype")
        print(f"{name:<6}{label:<22}{len(specs) + glue_launches:>15}{fused_bytes / 1e6:>10.3f}"
              f"{floor_us(fused_bytes, fused_flops):>10.2f}{ref_launches:>13}{ref_bytes / 1e6:>9.3f}"
              f"{floor_us(ref_bytes, ref_flops):>10.2f}{ref_bytes / fused_bytes:>16.1f}")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
