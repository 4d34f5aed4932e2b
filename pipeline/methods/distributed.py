"""Gathering rows from every process, for methods whose loss or state spans the global batch.

Both functions are the identity on a single process. They use torch's functional collectives,
which trace under torch.compile and run on gloo (CPU) and NCCL alike.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fc


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each of W processes -> (W * B, ...) in rank order, the same on every process; no gradient."""
    if rank_and_world()[1] == 1:
        return x
    return fc.wait_tensor(fc.all_gather_tensor(x.detach().contiguous(), 0, dist.group.WORLD))


def gather_rows_with_grad(x: torch.Tensor) -> torch.Tensor:
    """As `gather_rows`, differentiable: the backward sums every process's gradient for this process's rows.

    So when every process computes the same loss L on the gathered rows, the local rows get W * dL/dx,
    and DDP's gradient average over W processes gives exactly dL/dtheta.
    """
    if rank_and_world()[1] == 1:
        return x
    return fc.all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)
