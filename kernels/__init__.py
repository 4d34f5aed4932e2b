"""Distillation losses. CUDA tensors go to the fused Triton kernels, CPU tensors to the PyTorch
reference (`kernels/reference.py`, the definition of correct). Set KERNELS_BACKEND=auto|triton|reference
to override (with TRITON_INTERPRET=1, `triton` runs the kernels on CPU tensors: that is how tests run them).
`kernels.set_backend(name)` changes it at run time (tests).

Each Triton module `kernels/<name>.py` exposes `<name>_loss` (a torch.library custom op, so it
compiles with fullgraph=True) and `build_specs(**sizes)` (for the GPU build test and bench/kernel_report.py).
If triton cannot be imported, or a module is missing, `auto` falls back to the reference and logs
that once, loudly, when CUDA tensors reach it.
"""
import importlib
import logging
import os

import torch

from kernels import reference

__all__ = ["kd_loss", "dkd_loss", "icd_loss", "ccd_loss", "set_backend", "get_backend", "BACKENDS"]

BACKENDS = ("auto", "triton", "reference")
_log = logging.getLogger(__name__)


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"KERNELS_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_backend = _check_backend(os.environ.get("KERNELS_BACKEND", "auto"))


def _import_triton_modules() -> tuple[dict, dict]:
    """{name: module} of the Triton kernel modules that import, and {name: reason} for the others."""
    modules, missing = {}, {}
    for name in ("kd", "dkd", "icd", "ccd"):
        try:
            modules[name] = importlib.import_module(f"kernels.{name}")
        except ModuleNotFoundError as e:
            if e.name not in (f"kernels.{name}", "triton") and not (e.name or "").startswith("triton."):
                raise  # a real bug inside a kernel module must not hide behind the fallback
            missing[name] = f"cannot import {e.name}"
    return modules, missing


_triton, _missing = _import_triton_modules()
_warned: set[str] = set()


def _log_fallback(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        _log.warning(
            "kernels.%s_loss: CUDA tensors are using the UNFUSED PyTorch reference as a FALLBACK (%s)",
            name, _missing.get(name, "no Triton kernel"),
        )


# Called from compiled steps: dynamo replays it after the graph instead of breaking fullgraph.
torch._dynamo.config.reorderable_logging_functions.add(_log_fallback)


def set_backend(name: str) -> None:
    global _backend
    _backend = _check_backend(name)


def get_backend() -> str:
    return _backend


def _impl(name: str, x: torch.Tensor):
    if _backend == "reference" or (_backend == "auto" and not x.is_cuda):
        return getattr(reference, f"{name}_loss")
    module = _triton.get(name)
    if module is None:
        if _backend == "triton":
            raise RuntimeError(f"KERNELS_BACKEND=triton but there is no Triton {name}_loss ({_missing[name]})")
        _log_fallback(name)
        return getattr(reference, f"{name}_loss")
    return getattr(module, f"{name}_loss")


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return _impl("kd", s_logits)(s_logits, t_logits, temperature)


def dkd_loss(
    s_logits_a: torch.Tensor,
    s_logits_b: torch.Tensor,
    t_logits_a: torch.Tensor,
    t_logits_b: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    return _impl("dkd", s_logits_a)(s_logits_a, s_logits_b, t_logits_a, t_logits_b, temperature)


def icd_loss(
    z_s: torch.Tensor,
    z_t: torch.Tensor,
    log_scale: torch.Tensor,
    bias: torch.Tensor,
    alpha: float = 0.5,
    max_scale: float = 10.0,
) -> torch.Tensor:
    return _impl("icd", z_s)(z_s, z_t, log_scale, bias, alpha, max_scale)


def ccd_loss(f_s: torch.Tensor, f_t: torch.Tensor, theta: float = 2.0, eps: float = 1e-5) -> torch.Tensor:
    return _impl("ccd", f_s)(f_s, f_t, theta, eps)


for _f in (kd_loss, dkd_loss, icd_loss, ccd_loss):
    _f.__doc__ = getattr(reference, _f.__name__).__doc__
