"""What each Triton kernel module declares about its launches, for the GPU build test and the report.

A kernel module (kernels/kd.py, ...) exposes `build_specs(**sizes) -> list[KernelSpec]`: one spec per
@triton.jit kernel it launches (forward and backward), with the block sizes and warps production uses
at those sizes, so `tests/kernels/test_gpu_build.py` can compile exactly what runs on a GPU and
`bench/kernel_report.py` can print registers, spills, shared memory, bytes and FLOPs.

Dot precision. `dot_flops` splits the spec's tl.dot FLOPs by the precision the dots run at, because
the hardware rate differs by 15x between them (H100 SXM, dense, per second):
    "bf16":      bf16 x bf16 tensor-core MMA, fp32 accumulation       989 TFLOP
    "tf32":      fp32 operands rounded to tf32 on the tensor cores    494 TFLOP
    "ieee_fp32": fp32 operands, input_precision="ieee" (CUDA-core FMA) 67 TFLOP
A kernel without dots has no entry ("none"); its work, like every FLOP not in `dot_flops`, is
CUDA-core fp32 (67 TFLOP, and slower still for exp/log on the SFUs). `spec.dot_precision` names the
precisions in use ("none", "bf16", "ieee_fp32", "bf16+ieee_fp32", ...).
"""
from dataclasses import dataclass, field

DOT_PRECISIONS = ("bf16", "tf32", "ieee_fp32")
# H100 SXM peaks (dense, FLOP/s). "none": CUDA-core fp32, the rate of every FLOP outside tensor-core dots.
H100_PEAK_FLOPS = {"bf16": 989e12, "tf32": 494e12, "ieee_fp32": 67e12, "none": 67e12}


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
    flops: int = 0  # floating-point operations at these sizes, all of them (dots included)
    dot_flops: dict[str, int] = field(default_factory=dict)  # of `flops`, tl.dot FLOPs by DOT_PRECISIONS key

    def __post_init__(self):
        unknown = set(self.dot_flops) - set(DOT_PRECISIONS)
        if unknown or sum(self.dot_flops.values()) > self.flops:
            raise ValueError(f"{self.name}: dot_flops {self.dot_flops} (keys {DOT_PRECISIONS}, sum <= flops {self.flops})")

    @property
    def dot_precision(self) -> str:
        """"none" without dots, else the precisions of its dots joined by "+" (fastest first)."""
        return "+".join(p for p in DOT_PRECISIONS if self.dot_flops.get(p)) or "none"

    def compute_seconds(self) -> float:
        """Time at H100 peak: each precision's dot FLOPs at its rate, the rest at CUDA-core fp32."""
        other = self.flops - sum(self.dot_flops.values())
        return other / H100_PEAK_FLOPS["none"] + sum(f / H100_PEAK_FLOPS[p] for p, f in self.dot_flops.items())
