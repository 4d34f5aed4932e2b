"""What each Triton kernel module declares about its launches, for the GPU build test and the report.

A kernel module (kernels/kd.py, ...) exposes `build_specs(**sizes) -> list[KernelSpec]`: one spec per
@triton.jit kernel it launches (forward and backward), with the block sizes and warps production uses
at those sizes, so `tests/kernels/test_gpu_build.py` can compile exactly what runs on a GPU and
`bench/kernel_report.py` can print registers, spills, shared memory, bytes and FLOPs.
"""
from dataclasses import dataclass, field


@dataclass
class KernelSpec:
    name: str  # e.g. "kd.forward"
    fn: object  # the @triton.jit function
    signature: dict[str, str]  # argument name -> triton type ("*fp32", "*bf16", "i32", "fp32", "constexpr")
    constexprs: dict[str, object] = field(default_factory=dict)  # BLOCK sizes etc., as production picks them
    num_warps: int = 4
    num_stages: int = 3
    grid: tuple[int, ...] = (1,)  # programs launched at these sizes
    bytes_moved: int = 0  # global-memory bytes read + written at these sizes (ideal, one pass)
    flops: int = 0  # floating-point operations at these sizes
