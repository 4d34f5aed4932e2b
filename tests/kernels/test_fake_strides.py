"""Each kernels:: custom op's fake (meta) implementation gives its outputs the shapes, dtypes and strides the
real op returns, for strided (non-contiguous) inputs too: torch.compile plans the graph with the fake
outputs, so a stride that differs from the real one is a silent layout assumption that breaks later ops."""
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import kernels  # noqa: F401  (registers the kernels:: ops)
from kernels._build import available_modules


def strided(rows, cols, seed, dtype=torch.float32):
    """A (rows, cols) transposed view: strides (1, rows), not contiguous."""
    x = torch.randn(cols, rows, generator=torch.Generator().manual_seed(seed)).to(dtype).T
    assert not x.is_contiguous()
    return x


def cases():
    """(name, op, args) of every op that returns input-shaped tensors, with strided inputs where they may be."""
    out = []
    mods = available_modules()
    if "kd" in mods:
        for t_dtype in (torch.float32, torch.bfloat16):  # mixed: bf16 student (autocast), fp32 teacher
            s, t = strided(4, 10, 0, torch.bfloat16), strided(4, 10, 1, t_dtype)
            out.append((f"kd-{t_dtype}", torch.ops.kernels.kd_loss, (s, t, 2.0, True, True)))
    if "dkd" in mods:
        s_a, s_b, t_a, t_b = (strided(4, 10, i) for i in range(4))
        out.append(("dkd", torch.ops.kernels.dkd_loss, (s_a, s_b, t_a, t_b, 2.0, True, True)))
    if "icd" in mods:
        z_s, z_t = (F.normalize(strided(8, 16, i), dim=1) for i in (5, 6))
        z_s, z_t = z_s.T.contiguous().T, z_t.T.contiguous().T  # normalize returns contiguous: strided again
        scale, bias = torch.tensor(1.0), torch.tensor(0.0)
        _, row_lse, col_lse, t = torch.ops.kernels.icd_loss(z_s, z_t, scale, bias, 0.5, 10.0)
        out.append(("icd_backward", torch.ops.kernels.icd_loss_backward,
                    (torch.tensor(1.0), z_s, z_t, scale, bias, row_lse, col_lse, t, 0.5, 10.0, True, True)))
    if "ccd" in mods:
        f_s, f_t = strided(8, 16, 7, torch.bfloat16), strided(8, 16, 8)  # as in production: bf16 x fp32
        _, *stats = torch.ops.kernels.ccd_loss(f_s, f_t, 2.0, 1e-5)
        out.append(("ccd_backward", torch.ops.kernels.ccd_loss_backward,
                    (torch.tensor(1.0), f_s, f_t, *stats, 2.0, True, True)))
    return out


CASES = cases()


@pytest.mark.parametrize("name,op,args", CASES, ids=[c[0] for c in CASES])
def test_fake_outputs_match_real_strides(name, op, args):
    real = op(*args)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = op(*fake_args)
    assert len(real) == len(fake)
    for i, (r, f) in enumerate(zip(real, fake)):
        assert (tuple(f.shape), f.dtype, f.stride()) == (tuple(r.shape), r.dtype, r.stride()), (name, i)
    # The case is meaningful: some output has an input's (strided) shape.
    assert any(r.dim() == 2 for r in real), name
