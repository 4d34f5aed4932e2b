"""kernels.dkd_loss (Triton, interpreted on CPU) and kernels.reference.dkd_loss against an independent
float64 formula."""
import zlib

import pytest
import torch

import kernels
import kernels.kd as kd

SHAPES = [pytest.param((b, c), id=f"{b}x{c}") for b in (1, 2, 7, 64, 129) for c in (10, 1000)]
DTYPES = [pytest.param(torch.float32, 1e-4, id="fp32"), pytest.param(torch.bfloat16, 1e-2, id="bf16")]
T = 4.0


def dkd_float64(s_a, s_b, t_a, t_b, temperature):
    """T^2/2 * mean_i over both signs of d: sum_j softmax(d_t)_ij (log softmax(d_t) - log softmax(d_s))_ij."""
    total = 0.0
    for sign in (1.0, -1.0):
        a = sign * (s_a.double() - s_b.double()) / temperature
        b = sign * (t_a.double() - t_b.double()) / temperature
        log_p = a - a.logsumexp(1, keepdim=True)
        log_q = b - b.logsumexp(1, keepdim=True)
        total = total + (log_q.exp() * (log_q - log_p)).sum(1).mean()
    return temperature**2 / 2 * total


def views(shape, dtype, seed):
    """Four logit tensors: s_a, s_b, t_a, t_b (view b correlated with view a, as for two crops)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        base = torch.randn(shape, generator=g) * (3 + 2 * torch.rand((), generator=g))
        out += [base, base + 2 * torch.randn(shape, generator=g)]
    return [x.to(dtype) for x in out]


def check(inputs, temperature, tol, close, grad_output=1.0, teacher_grad=False):
    """Loss and every gradient of kernels.dkd_loss (current backend) against dkd_float64 + autograd."""
    s_a, s_b, t_a, t_b = (x.clone() for x in inputs)
    wanted = [s_a, s_b] + ([t_a, t_b] if teacher_grad else [])
    for x in wanted:
        x.requires_grad_()
    loss = kernels.dkd_loss(s_a, s_b, t_a, t_b, temperature)
    grads = torch.autograd.grad(loss, wanted, torch.tensor(grad_output))
    ref_inputs = [x.detach().double().requires_grad_() for x in (s_a, s_b, t_a, t_b)]
    ref = dkd_float64(*ref_inputs, temperature)
    ref_grads = torch.autograd.grad(ref, ref_inputs[: len(wanted)], torch.tensor(grad_output, dtype=torch.float64))
    assert loss.dtype == torch.float32 and loss.dim() == 0
    close(loss, ref, tol, "loss")
    for name, g, r, x in zip(("d/ds_a", "d/ds_b", "d/dt_a", "d/dt_b"), grads, ref_grads, wanted):
        assert g.dtype == x.dtype, name
        close(g, r, tol, name)


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dkd_matches_float64(shape, dtype, tol, impl, backend, poison, close):
    backend(impl)
    check(views(shape, dtype, zlib.crc32(repr((shape, dtype)).encode())), T, tol, close)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(7, 1000), (2, 10)])
def test_dkd_teacher_grad_and_grad_output(shape, dtype, tol, backend, poison, close):
    backend("triton")
    check(views(shape, dtype, 23 + shape[0]), 2.5, tol, close, grad_output=-3.7, teacher_grad=True)


@pytest.mark.parametrize("max_block", [256, 4])  # C = 1000 in 4 blocks (last partial); C = 10 in 3 blocks
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_dkd_streaming_rows(max_block, dtype, tol, backend, poison, close, monkeypatch):
    monkeypatch.setattr(kd, "MAX_BLOCK_C", max_block)  # dkd.py shares kd.row_config
    backend("triton")
    shape = (5, 1000) if max_block == 256 else (3, 10)
    check(views(shape, dtype, 9), T, tol, close, grad_output=0.3, teacher_grad=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dkd_extreme_logits_stay_finite(dtype, backend, poison, close):
    backend("triton")
    s_a, s_b, t_a, t_b = (x * 5000 for x in views((4, 1000), dtype, 13))
    s_b[1] = s_a[1]  # zero student difference in one row: uniform softmax both ways
    check([s_a, s_b, t_a, t_b], 1.0, 1e-4 if dtype == torch.float32 else 1e-2, close)
    # The teacher softmaxes are one-hot here, so the exact d/dt is 0: only ask for finite and tiny
    # (fp32 cancellation in log q - log p - KL at |d| ~ 1e4 leaves ~1e-4).
    t_a.requires_grad_()
    (g_t,) = torch.autograd.grad(kernels.dkd_loss(s_a, s_b, t_a, t_b, 1.0), t_a)
    assert torch.isfinite(g_t).all() and g_t.abs().max() < 1e-2


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize("temperature", [1.0, 2.5, 7.0])
@pytest.mark.parametrize("shape", [(7, 10), (3, 1000)])
def test_dkd_non_default_temperature(shape, temperature, impl, backend, poison, close):
    # Every gradient (both student views, both teacher views) against the float64 formula at T != 4:
    # d/ds_b is checked on its own, not as -d/ds_a (which the autograd wrapper returns by construction).
    backend(impl)
    check(views(shape, torch.float32, zlib.crc32(repr((shape, temperature)).encode())), temperature, 1e-4, close,
          grad_output=0.7, teacher_grad=True)
