"""Compile KernelSpecs for a GPU architecture on a machine without a GPU.

`compile_spec(spec, arch)` runs triton.compile for GPUTarget("cuda", arch, 32) (ptxas ships in the
triton wheel) and returns registers, spill bytes and shared memory. Triton only learns registers and
spills when it loads the cubin on a device, so we re-run the wheel's ptxas with `-v` on the PTX.

The @triton.jit functions must be real JITFunctions, i.e. TRITON_INTERPRET unset when kernel modules
are imported. `build_in_subprocess()` therefore runs `python -m kernels._build` with a clean env and
returns one result dict per (module, spec, arch); the GPU build test and bench/kernel_report.py use it.
"""
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

from kernels._spec import KernelSpec

KERNEL_MODULES = ("kd", "dkd", "icd", "ccd")
ARCHS = (80, 90)
SHARED_LIMIT = {80: 166912, 90: 232448}  # max dynamic shared memory per block (bytes): 163 KiB, 227 KiB
# Sizes every module is built at (ImageNet, per GPU): logits (256, 1000); features d = 512 (ResNet-18/34)
# and 2048 (ResNet-50). icd takes d as its embedding width D, which production does not use (see below).
PRODUCTION_SIZES = tuple({"B": 256, "C": 1000, "d": d, "dtype": dtype} for d in (512, 2048) for dtype in ("bf16", "fp32"))
ICD_DIM = 128  # pipeline/methods/icd.py: heads project to 128-d embeddings
ICD_BATCHES = (256, 512)  # one view per GPU, and two views in one call
_ALIASES = {"d": ("d", "D", "dim")}


# The teacher's dtype at each training precision: the trainer casts teacher outputs with .float(), so under
# bf16 autocast kd/dkd get bf16 student and fp32 teacher logits, and ccd bf16 M_s(f_s) with fp32 teacher features.
TEACHER_DTYPE = {"bf16": "fp32", "fp32": "fp32"}


def production_jobs(dtypes=("bf16", "fp32")) -> list[tuple[str, dict]]:
    """(module, sizes) of the launches production makes, per training precision in `dtypes`: kd/dkd logits
    (256, 1000) and ccd features (256, 512 or 2048) with the student in that dtype and the teacher in
    TEACHER_DTYPE's; icd embeddings (256 or 512, 128), both in that dtype (pipeline/methods/icd.py
    normalises them in fp32 today, so its bf16 rows are the kernel's bf16 path, kept built for when it
    does not). Only modules present in the tree."""
    jobs = []
    for dtype in dtypes:
        teacher = {"dtype": dtype, "teacher_dtype": TEACHER_DTYPE[dtype]}
        jobs += [(m, {"B": 256, "C": 1000, **teacher}) for m in ("kd", "dkd")]
        jobs += [("icd", {"B": b, "d": ICD_DIM, "dtype": dtype}) for b in ICD_BATCHES]
        jobs += [("ccd", {"B": 256, "d": d, **teacher}) for d in (512, 2048)]
    present = set(available_modules())
    return [(m, sizes) for m, sizes in jobs if m in present]


def available_modules() -> list[str]:
    """Kernel modules present in the tree (icd/ccd are written separately and may not exist yet)."""
    return [name for name in KERNEL_MODULES if importlib.util.find_spec(f"kernels.{name}") is not None]


def size_kwargs(module_name: str, sizes: dict) -> dict:
    """The subset of sizes that module's build_specs takes, under its own names (d/D, "bf16"/torch.bfloat16)."""
    import torch

    params = inspect.signature(importlib.import_module(f"kernels.{module_name}").build_specs).parameters
    kwargs = {}
    for key, value in sizes.items():
        for alias in _ALIASES.get(key, (key,)):
            if alias in params:
                param = params[alias]
                if key == "dtype" and (param.annotation is torch.dtype or isinstance(param.default, torch.dtype)):
                    value = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[value]
                kwargs[alias] = value
    return kwargs


def specs_for(module_name: str, sizes: dict) -> list[KernelSpec]:
    """build_specs(**sizes), passing only the size names that module's build_specs takes."""
    return importlib.import_module(f"kernels.{module_name}").build_specs(**size_kwargs(module_name, sizes))


def spec_key(spec: KernelSpec) -> str:
    """Identity of a compiled variant: two size sets giving the same launch compile once."""
    consts = ",".join(f"{k}={v}" for k, v in sorted(spec.constexprs.items()))
    sig = ",".join(v for v in spec.signature.values() if v != "constexpr")
    return f"{spec.name}[{sig}|{consts}|w{spec.num_warps}s{spec.num_stages}]"


def _ptxas_stats(ptx: str, arch: int) -> tuple[int, int]:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        # Same flags triton's make_cubin passes (-lineinfo, --regAllocOptLevel=2), plus -v for the stats.
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", path, "-o", os.path.join(tmp, "kernel.cubin")]
        log = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or spills is None:
        raise RuntimeError(f"unexpected ptxas -v output:\n{log}")
    return int(regs.group(1)), int(spills.group(1)) + int(spills.group(2))


def compile_spec(spec: KernelSpec, arch: int) -> dict:
    """Compile for sm_<arch>; returns n_regs, n_spills (spill store + load bytes) and shared (bytes)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if not isinstance(spec.fn, triton.runtime.JITFunction):
        raise RuntimeError(f"{spec.name}: not a JITFunction (is TRITON_INTERPRET set?)")
    # Production launches pass freshly allocated tensors: torch aligns them, so triton specialises
    # every pointer as 16-byte divisible; integer sizes (C = 1000, ...) are left unspecialised.
    names = list(spec.signature)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, ty in spec.signature.items() if ty.startswith("*")}
    src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
    n_regs, n_spills = _ptxas_stats(kernel.asm["ptx"], arch)
    return {"n_regs": n_regs, "n_spills": n_spills, "shared": kernel.metadata.shared}


def _job(job: tuple[str, dict, int, int]) -> dict:
    module_name, sizes, index, arch = job
    spec = specs_for(module_name, sizes)[index]
    result = compile_spec(spec, arch)
    return {"module": module_name, "name": spec.name, "key": spec_key(spec), "arch": arch, "sizes": sizes,
            "constexprs": {k: v for k, v in spec.constexprs.items()}, "num_warps": spec.num_warps,
            "grid": list(spec.grid), "bytes_moved": spec.bytes_moved, "flops": spec.flops,
            "dot_precision": spec.dot_precision, **result}


def build_all(jobs: list[tuple[str, dict]], archs=ARCHS, workers: int = 2) -> list[dict]:
    """Compile every distinct spec of each (module, sizes) for each arch, in worker processes."""
    work, seen = [], set()
    for module_name, sizes in jobs:
        for index, spec in enumerate(specs_for(module_name, sizes)):
            for arch in archs:
                if (spec_key(spec), arch) not in seen:
                    seen.add((spec_key(spec), arch))
                    work.append((module_name, sizes, index, arch))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_job, work))


def build_in_subprocess(jobs: list[tuple[str, dict]], archs=ARCHS, timeout: float = 600) -> list[dict]:
    """build_all in a fresh interpreter without TRITON_INTERPRET (kernels must be real JITFunctions)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    request = json.dumps({"jobs": jobs, "archs": list(archs)})
    proc = subprocess.run([sys.executable, "-m", "kernels._build"], input=request, env=env, cwd=root,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kernel build failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    request = json.loads(sys.stdin.read())
    results = build_all([(m, s) for m, s in request["jobs"]], tuple(request["archs"]))
    print(json.dumps(results))
