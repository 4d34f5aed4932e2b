"""Every KernelSpec of every kernel module, at production sizes, compiles for sm_80 and sm_90 on this
GPU-less machine without register spills and within the architecture's shared-memory limit.

Compilation runs once per session in a subprocess without TRITON_INTERPRET (conftest.py sets it
for the interpreter tests; compiled-mode kernels need it unset at import).
"""
import pytest

from kernels.kd import MAX_BLOCK_C

from kernels._build import (ARCHS, PRODUCTION_SIZES, SHARED_LIMIT, available_modules, build_in_subprocess,
                            production_jobs, spec_key, specs_for)

MODULES = available_modules()
JOBS = (
    production_jobs()  # each module at the sizes production launches it (icd: D = 128, B = 256 and 512)
    + [(m, sizes) for m in MODULES for sizes in PRODUCTION_SIZES]  # every module at d = 512 and 2048
    + [(m, {}) for m in MODULES]  # each module's own build_specs defaults
    # Variants production meets less often: the widest row kept in registers, rows streamed in blocks
    # (ImageNet-21k), teacher grads.
    + [(m, {"B": 256, "C": c, "dtype": "bf16"}) for m in ("kd", "dkd") for c in (MAX_BLOCK_C, 21843)]
    + [(m, {"B": 256, "C": 1000, "dtype": "bf16", "teacher_grad": True}) for m in ("kd", "dkd")]
)
CASES = sorted({(f"{m}:{spec_key(spec)}", arch) for m, sizes in JOBS for spec in specs_for(m, sizes) for arch in ARCHS})


@pytest.fixture(scope="session")
def built():
    """{(module:spec key, arch): result} for every case, compiled once."""
    return {(f"{r['module']}:{r['key']}", r["arch"]): r for r in build_in_subprocess(JOBS)}


def test_every_module_has_specs():
    assert {"kd", "dkd"} <= set(MODULES)
    for m in MODULES:
        assert specs_for(m, PRODUCTION_SIZES[0]), f"kernels.{m}.build_specs returned nothing"


def test_production_variants_are_built():
    # icd's bf16 launches use bf16 tensor-core similarity dots (DOT_BF16=True) on a GPU; fp32's do not.
    # Both, at production's D = 128, must be among the compiled cases.
    if "icd" not in MODULES:
        pytest.skip("no kernels/icd.py")
    keys = {case for case, _ in CASES}
    for dtype, dot_bf16 in (("bf16", True), ("fp32", False)):
        for spec in specs_for("icd", {"B": 512, "d": 128, "dtype": dtype}):
            assert spec.constexprs["DOT_BF16"] is dot_bf16, (dtype, spec.name)
            assert f"icd:{spec_key(spec)}" in keys


@pytest.mark.parametrize("case,arch", CASES, ids=[f"{c}-sm{a}" for c, a in CASES])
def test_builds_without_spills(case, arch, built):
    result = built[(case, arch)]
    assert 0 < result["n_regs"] <= 255, result  # ptxas stats parsed (255 = the per-thread maximum)
    assert result["n_spills"] == 0, f"{case} spills {result['n_spills']} bytes on sm_{arch}"
    assert result["shared"] <= SHARED_LIMIT[arch], f"{case} needs {result['shared']} B shared on sm_{arch}"
