"""kernels/ccd.py against an independent float64 implementation of CCD's L_eye.

The Triton kernels run in the interpreter on CPU (TRITON_INTERPRET=1, also set by conftest.py).
Every buffer the kernels fill starts as NaN (conftest's `poison`), so an element left unwritten fails.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported; duplicate of conftest.py

import zlib

import pytest
import torch

from kernels import ccd, reference

THETA, EPS = 2.0, 1e-5
LARGE = [pytest.mark.slow, pytest.mark.timeout(600)]  # interpreter-heavy: CI runs it (-m slow), the README's command not
SHAPES = [(B, d) for B in (2, 7, 64) for d in (64, 100, 512)] + [
    pytest.param(129, 64), pytest.param(129, 100), pytest.param(129, 512, marks=LARGE, id="129-512-large")]
DTYPES = [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)]  # (input dtype, relative tolerance)
# d = 512 (several column blocks) stays in the README's run at B = 64 in fp32 (the tight tolerance); its other
# batch sizes and bf16 are the same code path at 20-30 s each in the interpreter: CI's slow run has them.
SLOW_CASES = {(2, 512, torch.float32), (2, 512, torch.bfloat16), (7, 512, torch.float32), (7, 512, torch.bfloat16),
              (64, 512, torch.bfloat16)}
pytestmark = pytest.mark.usefixtures("poison")


def ccd_formula(f_s, f_t, theta=THETA, eps=EPS):
    """DCCD eq. 3-7 in float64: batch-standardise each channel, Corr = c_s^T c_t / B, L_eye."""
    B, d = f_s.shape

    def standardise(x):
        mean = x.sum(dim=0) / B
        var = ((x - mean) ** 2).sum(dim=0) / B  # biased, as BatchNorm
        return (x - mean) / torch.sqrt(var + eps)

    corr = torch.einsum("bi,bj->ij", standardise(f_s), standardise(f_t)) / B
    eye = torch.eye(d, dtype=torch.bool)
    loss = ((1 - corr[eye]) ** 2).sum()
    if d > 1:
        loss = loss + theta / (d - 1) * (corr[~eye] ** 2).sum()
    return loss


def make_inputs(B, d, dtype, seed, scale=1.0):
    """Pooled-feature-like inputs: teacher post-ReLU (positive mean), student a noisy linear map of it."""
    gen = torch.Generator().manual_seed(seed)
    f_t = torch.relu(torch.randn(B, d, generator=gen) + 0.5) * scale
    f_s = 0.8 * f_t - 0.3 + 0.6 * scale * torch.randn(B, d, generator=gen)
    return f_s.to(dtype), f_t.to(dtype)


def rel_err(out, ref):
    assert torch.isfinite(out).all(), out
    return ((out.double() - ref).norm() / ref.norm()).item()


def kernel_and_formula(inputs, grad_scale, eps=EPS, theta=THETA):
    leaves = [x.clone().requires_grad_() for x in inputs]
    loss = ccd.ccd_loss(*leaves, theta, eps)
    grads = torch.autograd.grad(loss * grad_scale, leaves)
    ref_leaves = [x.detach().double().requires_grad_() for x in inputs]  # bf16-rounded values, exactly
    ref = ccd_formula(*ref_leaves, theta=theta, eps=eps)
    ref_grads = torch.autograd.grad(ref * grad_scale, ref_leaves)
    assert loss.shape == () and loss.dtype == torch.float32
    for g, x in zip(grads, inputs):
        assert g.shape == x.shape and g.dtype == x.dtype
    return loss, grads, ref, ref_grads


def check(B, d, dtype, tol, grad_scale=1.0):
    seed = zlib.crc32(repr((B, d, dtype, grad_scale)).encode())
    # With B = 2 every standardised column is +-sqrt(var / (var + eps)), so the true gradient is
    # O(eps / var) and computing it cancels ~all digits; with var ~ eps it is O(1) and well posed.
    inputs = make_inputs(B, d, dtype, seed, scale=3e-3 if B == 2 else 1.0)
    loss, grads, ref, ref_grads = kernel_and_formula(inputs, grad_scale)
    assert rel_err(loss, ref) < tol
    for name, g, r in zip(("f_s", "f_t"), grads, ref_grads):
        assert r.norm() > 1e-6 * ref.abs()  # a real gradient, not a vacuous comparison
        assert rel_err(g, r) < tol, name


def formula_cases():
    for shape in SHAPES:
        values, marks = (shape.values, list(shape.marks)) if hasattr(shape, "values") else (shape, [])
        for dtype, tol in DTYPES:
            slow = marks or ((*values, dtype) in SLOW_CASES and LARGE)
            yield pytest.param(*values, dtype, tol, marks=slow or (),
                               id=f"{values[0]}-{values[1]}-{str(dtype).split('.')[-1]}" + ("-large" if marks else ""))


@pytest.mark.parametrize("B, d, dtype, tol", formula_cases())
def test_ccd_matches_formula(B, d, dtype, tol):
    check(B, d, dtype, tol)


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("B, d", [(7, 100), (64, 64)])
def test_ccd_grad_output(B, d, dtype, tol):
    check(B, d, dtype, tol, grad_scale=0.37)


@pytest.mark.parametrize("theta, eps", [(0.0, EPS), (0.7, EPS), (5.0, 0.3), (THETA, 0.05)])
@pytest.mark.parametrize("B, d", [(7, 20), (20, 40)])
def test_ccd_non_default_theta_and_eps(B, d, theta, eps):
    # theta weighs the off-diagonal (forward and backward); eps sits inside every channel's sqrt(var + eps).
    # At the defaults eps = 1e-5 is invisible next to var ~ 0.5, so eps = 0.05-0.3 makes a dropped or
    # hard-coded eps fail; theta != 2 catches a hard-coded theta. Both gradients against the formula.
    inputs = make_inputs(B, d, torch.float32, seed=zlib.crc32(repr((B, d, theta, eps)).encode()))
    loss, grads, ref, ref_grads = kernel_and_formula(inputs, 0.37, eps=eps, theta=theta)
    assert rel_err(loss, ref) < 1e-4
    for name, g, r in zip(("f_s", "f_t"), grads, ref_grads):
        assert rel_err(g, r) < 1e-4, name


@pytest.mark.parametrize("trained", [(0,), (1,)])
def test_ccd_only_requested_gradients(trained):
    # production detaches the teacher: its launch is skipped, the student's gradient stays exact
    inputs = make_inputs(7, 100, torch.float32, seed=13)
    leaves = [x.clone().requires_grad_(i in trained) for i, x in enumerate(inputs)]
    (grad,) = torch.autograd.grad(ccd.ccd_loss(*leaves) * 0.37, [leaves[i] for i in trained])
    ref_leaves = [x.double().requires_grad_() for x in inputs]
    (ref_grad,) = torch.autograd.grad(ccd_formula(*ref_leaves) * 0.37, [ref_leaves[i] for i in trained])
    assert rel_err(grad, ref_grad) < 1e-4


def test_ccd_single_channel_has_no_off_diagonal():
    check(16, 1, torch.float32, 1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ccd_single_sample(dtype):
    # B = 1 (as the reference): x - mean = 0, so c = 0, Corr = 0, the loss is d and nothing flows back
    loss, grads, ref, ref_grads = kernel_and_formula(make_inputs(1, 100, dtype, seed=2), 1.0)
    assert ref.item() == 100.0 and loss.item() == 100.0
    for g, r in zip(grads, ref_grads):
        assert torch.count_nonzero(r) == 0 and torch.count_nonzero(g) == 0


def test_reference_matches_formula():
    inputs = [x.double().requires_grad_() for x in make_inputs(33, 20, torch.float64, seed=7)]
    ref = reference.ccd_loss(*inputs, THETA, EPS)
    ref_grads = torch.autograd.grad(ref, inputs)
    formula = ccd_formula(*inputs)
    formula_grads = torch.autograd.grad(formula, inputs)
    assert abs(ref.item() - formula.item()) < 1e-12 * abs(formula.item())
    for g, f in zip(ref_grads, formula_grads):
        assert (g - f).abs().max().item() < 1e-12 * f.abs().max().item()


@pytest.mark.parametrize("d", [1, 6])
def test_reference_gradcheck(d):
    inputs = [x.double().requires_grad_() for x in make_inputs(5, d, torch.float64, seed=3)]
    assert torch.autograd.gradcheck(lambda *xs: reference.ccd_loss(*xs, THETA, EPS), inputs)


def test_ccd_custom_op_registrations():
    # schema, fake (meta) kernel and autograd registration of the forward op, as torch.compile needs them
    inputs = [x.requires_grad_() for x in make_inputs(7, 64, torch.float32, seed=5)]
    torch.library.opcheck(torch.ops.kernels.ccd_loss.default, (*inputs, THETA, EPS))


def test_ccd_compiles_fullgraph():
    inputs = make_inputs(7, 64, torch.float32, seed=11)
    eager = [x.clone().requires_grad_() for x in inputs]
    compiled = [x.clone().requires_grad_() for x in inputs]
    loss = ccd.ccd_loss(*eager) * 0.37
    loss.backward()
    step = torch.compile(lambda *xs: ccd.ccd_loss(*xs) * 0.37, fullgraph=True, backend="aot_eager")
    c_loss = step(*compiled)
    c_loss.backward()
    assert torch.equal(c_loss, loss)  # same kernels on the same inputs: bitwise equal
    for e, c in zip(eager, compiled):
        assert torch.equal(c.grad, e.grad)
