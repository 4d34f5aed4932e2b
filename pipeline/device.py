"""Where the run trains, decided once, and a GPU node that cannot use its GPU saying so.

Without CUDA the trainer can still run on CPU (fp32, gloo, CPU decode): right for the demo, wrong for a
GPU job whose driver is too old for the installed torch. So CPU training is allowed only when nothing
asked for CUDA: one process, or an explicit CPU choice for several (ACCELERATE_USE_CPU=1, which
`accelerate launch --cpu` sets, or train.device: cpu); and never with train.precision bf16 or
train.device cuda (DALI decodes on the training device, so cuda is also how a run asks for GPU decode).
Otherwise it is an error naming what torch reports.
"""
from __future__ import annotations

import logging
import os

import torch
from accelerate.utils import parse_flag_from_env

from pipeline.errors import UserError

log = logging.getLogger(__name__)
_warned = False


class CudaUnavailableError(UserError):
    """The run needs CUDA (several processes, bf16, train.device cuda) and torch cannot use it."""


def cuda_unavailable_reason() -> str:
    """What torch says about CUDA here, on one line: build, device count, CUDA_VISIBLE_DEVICES, init error."""
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build (torch.version.cuda is None)"
    parts = [f"torch {torch.__version__}, {build}: torch.cuda.is_available() is False"]
    try:
        parts.append(f"{torch._C._cuda_getDeviceCount()} CUDA devices visible")
    except Exception as e:  # noqa: BLE001 (a CPU-only build has no such function)
        parts.append(f"device count unavailable ({e})")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        parts.append(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}")
    try:
        torch.cuda.init()  # raises the driver's own message (no driver, driver too old, ...)
    except Exception as e:  # noqa: BLE001
        parts.append(f"CUDA initialisation: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    return "; ".join(parts)


def use_cpu(cfg) -> bool:
    """True to train on CPU, False for CUDA; raises CudaUnavailableError when the run needs CUDA and has none."""
    global _warned
    device = cfg.train.device
    explicit_cpu = device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU")
    if not explicit_cpu and torch.cuda.is_available():
        return False
    world = int(os.environ.get("WORLD_SIZE") or 1)
    needs = []
    if cfg.train.precision == "bf16":
        needs.append("train.precision is bf16 (use fp32 or auto on CPU)")
    if not explicit_cpu:
        if device == "cuda":
            needs.append("train.device is cuda")
        if world > 1:
            needs.append(f"{world} processes were started (WORLD_SIZE={world}) without an explicit CPU choice "
                         "(ACCELERATE_USE_CPU=1 / accelerate launch --cpu, or train.device cpu)")
    if needs:
        what = "CUDA is not used (an explicit CPU choice)" if explicit_cpu else f"CUDA is unavailable ({cuda_unavailable_reason()})"
        raise CudaUnavailableError(f"{what}, but " + "; and ".join(needs))
    if not explicit_cpu and not _warned:
        _warned = True
        log.warning("FALLBACK: CUDA is unavailable (%s): training on CPU, one process, fp32, CPU decode",
                    cuda_unavailable_reason())
    return True
