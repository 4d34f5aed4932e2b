"""Kernel tests run the Triton kernels on CPU tensors through the Triton interpreter.

@triton.jit decides between compiled and interpreted when a kernel module is imported, so
TRITON_INTERPRET is set here, before any test in this directory imports triton or kernels.
(test_gpu_build.py compiles for real GPUs in a subprocess with the variable removed.)
"""
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if "kernels.kd" in sys.modules:  # imported by an earlier test directory: its kernels are compiled-mode
    import triton  # noqa: E402

    if isinstance(sys.modules["kernels.kd"]._kd_kernel, triton.runtime.JITFunction):
        raise RuntimeError("kernels.kd was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1; "
                           "run tests/kernels in its own pytest process")

import kernels  # noqa: E402


@pytest.fixture
def backend():
    """Select a kernels backend for one test: backend("triton") or backend("reference")."""
    previous = kernels.get_backend()
    yield kernels.set_backend
    kernels.set_backend(previous)


@pytest.fixture
def poison(monkeypatch):
    """New float tensors from torch.empty/empty_like start as NaN, so an output the kernel never writes fails."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan_fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(empty_like(*a, **k)))


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> None:
    """Finite, same shape, and ||out - ref|| / ||ref|| < tol (computed in float64)."""
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    err = (out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol}"


@pytest.fixture
def close():
    return assert_close
