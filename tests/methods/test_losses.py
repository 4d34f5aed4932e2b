"""kernels.reference (the losses every method calls on CPU) against the papers' equations, written out
independently in float64 with explicit loops, plus gradcheck and the two ICD gradient facts.

The Triton kernels are checked against the reference in tests/kernels; here the reference itself is
checked against the method notes' formulas.
"""
import math

import pytest
import torch

from formulas import ccd_formula, dkd_formula, icd_formula, kd_formula

from kernels import reference

T = 4.0


def randn(*shape, scale=1.0, seed):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale)


def unit_rows(n, d, seed):
    return torch.nn.functional.normalize(randn(n, d, seed=seed), dim=1)


def value_and_grads(fn, inputs):
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    value = fn(*inputs)
    return value.detach(), torch.autograd.grad(value, inputs)


def assert_matches(fn, formula, inputs, tol=1e-10):
    value, grads = value_and_grads(fn, inputs)
    expected, expected_grads = value_and_grads(formula, inputs)
    assert torch.allclose(value, expected, rtol=tol, atol=0), (value.item(), expected.item())
    for i, (g, e) in enumerate(zip(grads, expected_grads)):
        assert torch.allclose(g, e, rtol=1e-8, atol=1e-12), f"gradient of input {i}: max err {(g - e).abs().max()}"


@pytest.mark.parametrize("batch, classes", [(7, 1000), (33, 10)])
def test_kd(batch, classes):
    s, t = randn(batch, classes, scale=3, seed=1), randn(batch, classes, scale=5, seed=2)
    assert_matches(lambda s, t: reference.kd_loss(s, t, T), lambda s, t: kd_formula(s, t, T), [s, t])
    # The textbook gradient: d kd / d s_i = T * (softmax(s_i/T) - softmax(t_i/T)) / B.
    _, (grad_s, _) = value_and_grads(lambda s, t: reference.kd_loss(s, t, T), [s, t])
    expected = T * (torch.softmax(s / T, 1) - torch.softmax(t / T, 1)) / batch
    assert torch.allclose(grad_s, expected, atol=1e-12)


@pytest.mark.parametrize("batch, classes", [(7, 1000), (33, 10)])
def test_dkd(batch, classes):
    inputs = [randn(batch, classes, scale=3, seed=k) for k in range(4)]
    assert_matches(lambda *x: reference.dkd_loss(*x, T), lambda *x: dkd_formula(*x, T), inputs)


@pytest.mark.parametrize("batch, dim, log_scale", [(7, 100, 1.0), (13, 96, 1.7), (9, 128, 3.0)])
def test_icd(batch, dim, log_scale):
    z_s, z_t = unit_rows(batch, dim, seed=1), unit_rows(batch, dim, seed=2)
    scalars = [torch.tensor(log_scale, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)]
    assert_matches(reference.icd_loss, icd_formula, [z_s, z_t, *scalars])


@pytest.mark.parametrize("batch, dim", [(7, 12), (33, 100)])
def test_ccd(batch, dim):
    f_s, f_t = randn(batch, dim, scale=2, seed=1) + 0.5, randn(batch, dim, seed=2)
    assert_matches(reference.ccd_loss, ccd_formula, [f_s, f_t])


def test_gradcheck():
    def rand(*shape, seed):
        return randn(*shape, seed=seed).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, t: reference.kd_loss(s, t, T), (rand(3, 5, seed=1), rand(3, 5, seed=2)))
    assert torch.autograd.gradcheck(lambda *x: reference.dkd_loss(*x, T), tuple(rand(3, 5, seed=k) for k in range(4)))
    z_s, z_t = (unit_rows(4, 6, seed=k).requires_grad_(True) for k in (1, 2))
    scalars = (torch.tensor(1.2, dtype=torch.float64, requires_grad=True),
               torch.tensor(0.1, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(reference.icd_loss, (z_s, z_t, *scalars))
    assert torch.autograd.gradcheck(reference.ccd_loss, (rand(5, 4, seed=1), rand(5, 4, seed=2)))


@pytest.mark.parametrize("log_scale", [0.5, math.log(10.0) + 0.2])
def test_icd_bias_gradient_is_zero_and_clamp_stops_scale_gradient(log_scale):
    z_s, z_t = unit_rows(9, 16, seed=3), unit_rows(9, 16, seed=4)
    scale = torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    reference.icd_loss(z_s, z_t, scale, bias).backward()
    assert bias.grad.abs().item() < 1e-12  # b cancels in every row and column softmax
    if math.exp(log_scale) > 10.0:
        assert scale.grad.item() == 0.0  # min(exp(tau), 10) is flat above the clamp
    else:
        assert abs(scale.grad.item()) > 1e-4
