"""Every KernelSpec of every kernel module, at production sizes and in the dtype combinations production feeds
it, compiles for sm_80 and sm_90 on this GPU-less machine without register spills and within the
architecture's shared-memory limit.

Compilation runs once per session in a subprocess without TRITON_INTERPRET (conftest.py sets it
for the interpreter tests; compiled-mode kernels need it unset at import).
"""
import pytest

from kernels.kd import MAX_BLOCK_C

from kernels._build import (ARCHS, PRODUCTION_SIZES, SHARED_LIMIT, available_modules, build_in_subprocess,
                            production_jobs, spec_key, specs_for)

MODULES = available_modules()
JOBS = (
    # each module at the sizes and dtypes production launches it: under bf16 autocast kd/dkd/ccd get a bf16
    # student and an fp32 teacher (the trainer casts teacher outputs .float()), in fp32 runs both fp32;
    # icd (one dtype for both embeddings) in bf16 and fp32, D = 128, B = 256 and 512
    production_jobs()
    + [("icd", sizes) for sizes in PRODUCTION_SIZES]  # icd at D = 512 and 2048 too (not production's width)
    # Variants production meets less often, with the bf16 run's dtypes: the widest row kept in registers, rows
    # streamed in blocks (ImageNet-21k); teacher grads (also with a bf16 teacher).
    + [(m, {"B": 256, "C": c, "dtype": "bf16", "teacher_dtype": "fp32"}) for m in ("kd", "dkd") for c in (MAX_BLOCK_C, 21843)]
    + [(m, {"B": 256, "C": 1000, "dtype": "bf16", "teacher_grad": True, **t}) for m in ("kd", "dkd")
       for t in ({}, {"teacher_dtype": "fp32"})]
    + [("ccd", {"B": 256, "d": 2048, "dtype": "bf16", "teacher_dtype": "fp32", "teacher_grad": True})]
)
JOBS = [(m, sizes) for m, sizes in JOBS if m in MODULES]
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


def test_mixed_dtype_variants_are_built():
    """What the bf16 run launches (trainer: bf16 autocast, teacher outputs cast .float()): kd/dkd with bf16
    student and fp32 teacher logits, ccd with bf16 student and fp32 teacher features; each spec's pointer
    types say so, and each is among the compiled cases."""
    keys = {case for case, _ in CASES}
    expected = {"kd": ("s_ptr", "t_ptr"), "dkd": ("sa_ptr", "ta_ptr"), "ccd": ("fs_ptr", "ft_ptr")}
    for module, (student_arg, teacher_arg) in expected.items():
        if module not in MODULES:
            continue
        jobs = [sizes for m, sizes in production_jobs(("bf16",)) if m == module]
        assert jobs and all(s["dtype"] == "bf16" and s["teacher_dtype"] == "fp32" for s in jobs), jobs
        for sizes in jobs:
            for spec in specs_for(module, sizes):
                if student_arg in spec.signature:
                    assert (spec.signature[student_arg], spec.signature[teacher_arg]) == ("*bf16", "*fp32"), spec.name
                assert f"{module}:{spec_key(spec)}" in keys
    # ccd's backward: dx in the student's dtype, reading the teacher's fp32 features.
    if "ccd" in MODULES:
        bwd = [s for s in specs_for("ccd", {"B": 256, "d": 512, "dtype": "bf16", "teacher_dtype": "fp32"})
               if s.name == "ccd.backward_student"][0]
        assert (bwd.signature["own_ptr"], bwd.signature["other_ptr"], bwd.signature["dx_ptr"]) == ("*bf16", "*fp32", "*bf16")


@pytest.mark.parametrize("case,arch", CASES, ids=[f"{c}-sm{a}" for c, a in CASES])
def test_builds_without_spills(case, arch, built):
    result = built[(case, arch)]
    assert 0 < result["n_regs"] <= 255, result  # ptxas stats parsed (255 = the per-thread maximum)
    assert result["n_spills"] == 0, f"{case} spills {result['n_spills']} bytes on sm_{arch}"
    assert result["shared"] <= SHARED_LIMIT[arch], f"{case} needs {result['shared']} B shared on sm_{arch}"
