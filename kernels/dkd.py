"""Fused difference KD (DCCD's DKD), twin of `kernels.reference.dkd_loss`.

One Triton program per row reads the four logit rows once, forms the view differences in fp32 and
writes both directions' KL and the gradient w.r.t. the student difference d_s = s_a - s_b (so
d/ds_a = g and d/ds_b = -g), plus the teacher's when the teacher logits require grad. The forward
saves that gradient; the backward only scales it by grad_output.
"""
import torch
import triton
import triton.language as tl

from kernels._spec import KernelSpec
from kernels.kd import ELEMENT_SIZE, FLOPS_PER_ELEMENT, NEG, _kl_finish, _kl_grads, _kl_update, check_logits, row_config


# Per row, with a = (s_a - s_b)/T, b = (t_a - t_b)/T and loss = T^2/(2B) * sum_rows (KL+ + KL-):
#   KL+ = KL(softmax(b) || softmax(a)),  KL- = KL(softmax(-b) || softmax(-a))   (kd.py gives each one)
#   d loss / d s_a = -d loss / d s_b = T/(2B) * [(p+ - q+) - (p- - q-)]        p = student, q = teacher softmax
#   d loss / d t_a = -d loss / d t_b = T/(2B) * [q+ (log q+ - log p+ - KL+) - q- (log q- - log p- - KL-)]
# (the minus signs: the '-' direction sees -a and -b, so its gradient flips sign by the chain rule).
@triton.jit
def _load_diff(x_ptr, y_ptr, offs, mask, inv_t):
    """(x - y)/T in fp32 and its negation, masked lanes NEG in both."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    d = (x - y) * inv_t
    return tl.where(mask, d, NEG), tl.where(mask, -d, NEG)


@triton.jit
def _dkd_kernel(
    sa_ptr,  # (B, C) student logits, view a, fp32/bf16, contiguous
    sb_ptr,  # (B, C) student logits, view b
    ta_ptr,  # (B, C) teacher logits, view a
    tb_ptr,  # (B, C) teacher logits, view b
    loss_ptr,  # (B,) fp32 out: T^2/(2B) * (KL+ + KL-) of each row
    gs_ptr,  # (B, C) out, student dtype: d loss / d s_a (written iff GRAD_S)
    gt_ptr,  # (B, C) out, teacher dtype: d loss / d t_a (written iff GRAD_T)
    C,  # i32: classes
    inv_t,  # fp32: 1 / T
    loss_scale,  # fp32: T^2 / (2B)
    grad_scale,  # fp32: T / (2B)
    BLOCK_C: tl.constexpr,  # power of 2, <= kd.MAX_BLOCK_C
    SINGLE_BLOCK: tl.constexpr,  # C <= BLOCK_C: the rows stay in registers and are read once
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    sa_ptr += row * C
    sb_ptr += row * C
    ta_ptr += row * C
    tb_ptr += row * C
    gs_ptr += row * C
    gt_ptr += row * C
    offs = tl.arange(0, BLOCK_C)
    neg = tl.full((), NEG, tl.float32)
    zero = tl.zeros((), tl.float32)
    if SINGLE_BLOCK:
        mask = offs < C
        a, na = _load_diff(sa_ptr, sb_ptr, offs, mask, inv_t)
        b, nb = _load_diff(ta_ptr, tb_ptr, offs, mask, inv_t)
        m_a, z_a, m_b, z_b, w = _kl_update(neg, zero, neg, zero, zero, a, b)
        kl_pos, lse_a, lse_b = _kl_finish(m_a, z_a, m_b, z_b, w)
        m_a, z_a, m_b, z_b, w = _kl_update(neg, zero, neg, zero, zero, na, nb)
        kl_neg, lse_na, lse_nb = _kl_finish(m_a, z_a, m_b, z_b, w)
        da_pos, db_pos = _kl_grads(a, b, lse_a, lse_b, kl_pos)
        da_neg, db_neg = _kl_grads(na, nb, lse_na, lse_nb, kl_neg)
        if GRAD_S:
            tl.store(gs_ptr + offs, (grad_scale * (da_pos - da_neg)).to(gs_ptr.dtype.element_ty), mask=mask)
        if GRAD_T:
            tl.store(gt_ptr + offs, (grad_scale * (db_pos - db_neg)).to(gt_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: online statistics of both directions; pass 2 re-reads the rows to write gradients.
        m_a, z_a, m_b, z_b, w = neg, zero, neg, zero, zero
        m_na, z_na, m_nb, z_nb, w_n = neg, zero, neg, zero, zero
        for start in range(0, C, BLOCK_C):
            mask = start + offs < C
            a, na = _load_diff(sa_ptr + start, sb_ptr + start, offs, mask, inv_t)
            b, nb = _load_diff(ta_ptr + start, tb_ptr + start, offs, mask, inv_t)
            m_a, z_a, m_b, z_b, w = _kl_update(m_a, z_a, m_b, z_b, w, a, b)
            m_na, z_na, m_nb, z_nb, w_n = _kl_update(m_na, z_na, m_nb, z_nb, w_n, na, nb)
        kl_pos, lse_a, lse_b = _kl_finish(m_a, z_a, m_b, z_b, w)
        kl_neg, lse_na, lse_nb = _kl_finish(m_na, z_na, m_nb, z_nb, w_n)
        if GRAD_S or GRAD_T:
            for start in range(0, C, BLOCK_C):
                mask = start + offs < C
                a, na = _load_diff(sa_ptr + start, sb_ptr + start, offs, mask, inv_t)
                b, nb = _load_diff(ta_ptr + start, tb_ptr + start, offs, mask, inv_t)
                da_pos, db_pos = _kl_grads(a, b, lse_a, lse_b, kl_pos)
                da_neg, db_neg = _kl_grads(na, nb, lse_na, lse_nb, kl_neg)
                if GRAD_S:
                    g = grad_scale * (da_pos - da_neg)
                    tl.store(gs_ptr + start + offs, g.to(gs_ptr.dtype.element_ty), mask=mask)
                if GRAD_T:
                    g = grad_scale * (db_pos - db_neg)
                    tl.store(gt_ptr + start + offs, g.to(gt_ptr.dtype.element_ty), mask=mask)
    tl.store(loss_ptr + row, loss_scale * (kl_pos + kl_neg))


# ---------------------------------------------------------------- host launchers
def _forward(s_a, s_b, t_a, t_b, temperature: float, grad_s: bool, grad_t: bool):
    check_logits(s_a, s_b, t_a, t_b)
    if s_a.dtype != s_b.dtype or t_a.dtype != t_b.dtype:
        raise TypeError("both views of one network must have the same dtype")
    s_a, s_b, t_a, t_b = (x.contiguous() for x in (s_a, s_b, t_a, t_b))
    B, C = s_a.shape
    loss_rows = torch.empty(B, dtype=torch.float32, device=s_a.device)
    gs = torch.empty_like(s_a) if grad_s else s_a.new_empty(0)
    gt = torch.empty_like(t_a) if grad_t else t_a.new_empty(0)
    cfg = row_config(C)
    _dkd_kernel[(B,)](
        s_a, s_b, t_a, t_b, loss_rows, gs if grad_s else s_a, gt if grad_t else t_a,  # unused: never written
        C, 1.0 / temperature, temperature**2 / (2 * B), temperature / (2 * B),
        BLOCK_C=cfg["BLOCK_C"], SINGLE_BLOCK=cfg["SINGLE_BLOCK"], GRAD_S=grad_s, GRAD_T=grad_t,
        num_warps=cfg["num_warps"],
    )
    return loss_rows, gs, gt


def build_specs(B: int = 256, C: int = 1000, dtype: str = "bf16", teacher_grad: bool = False,
                teacher_dtype: str | None = None) -> list[KernelSpec]:
    """The launch production makes at these sizes: student grad only unless teacher_grad. `dtype` is the
    student logits', `teacher_dtype` the teacher's (default: the same; bf16 autocast: bf16 and fp32)."""
    teacher_dtype = teacher_dtype or dtype
    cfg = row_config(C)
    s_ptr, t_ptr = f"*{dtype}", f"*{teacher_dtype}"
    s_size, t_size = ELEMENT_SIZE[dtype], ELEMENT_SIZE[teacher_dtype]
    signature = {
        "sa_ptr": s_ptr, "sb_ptr": s_ptr, "ta_ptr": t_ptr, "tb_ptr": t_ptr, "loss_ptr": "*fp32", "gs_ptr": s_ptr,
        "gt_ptr": t_ptr, "C": "i32", "inv_t": "fp32", "loss_scale": "fp32", "grad_scale": "fp32",
        "BLOCK_C": "constexpr", "SINGLE_BLOCK": "constexpr", "GRAD_S": "constexpr", "GRAD_T": "constexpr",
    }
    constexprs = {"BLOCK_C": cfg["BLOCK_C"], "SINGLE_BLOCK": cfg["SINGLE_BLOCK"], "GRAD_S": True, "GRAD_T": teacher_grad}
    passes = 1 if cfg["SINGLE_BLOCK"] else 2
    written = 1 + teacher_grad
    return [KernelSpec(
        name="dkd.forward", fn=_dkd_kernel, signature=signature, constexprs=constexprs,
        num_warps=cfg["num_warps"], grid=(B,),
        # read 4 views (per pass); write grads, row losses
        bytes_moved=(passes * 2 * (s_size + t_size) + s_size + teacher_grad * t_size) * B * C + B * 4,
        # Per element: 2 differences, 2 scales, 2 negations, both directions' sums and gradients
        # (kd.py's count without its 2 scales), then one subtraction per gradient written.
        flops=(6 + 2 * (FLOPS_PER_ELEMENT[teacher_grad] - 2) + written) * B * C,
    )]


# ---------------------------------------------------------------- autograd wrapper
@torch.library.custom_op("kernels::dkd_loss", mutates_args=())
def _dkd_op(
    s_logits_a: torch.Tensor, s_logits_b: torch.Tensor, t_logits_a: torch.Tensor, t_logits_b: torch.Tensor,
    temperature: float, grad_s: bool, grad_t: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Internal (call dkd_loss): returns (row losses (B,), d loss/d s_a, d loss/d t_a); a gradient
    not asked for is an empty tensor. loss = row losses .sum()."""
    return _forward(s_logits_a, s_logits_b, t_logits_a, t_logits_b, temperature, grad_s, grad_t)


@_dkd_op.register_fake
def _(s_logits_a, s_logits_b, t_logits_a, t_logits_b, temperature, grad_s, grad_t):
    loss = s_logits_a.new_empty(s_logits_a.shape[:1], dtype=torch.float32)
    gs = torch.empty_like(s_logits_a, memory_format=torch.contiguous_format) if grad_s else s_logits_a.new_empty(0)
    gt = torch.empty_like(t_logits_a, memory_format=torch.contiguous_format) if grad_t else t_logits_a.new_empty(0)
    return loss, gs, gt


def _setup_context(ctx, inputs, output):
    _, gs, gt = output
    ctx.mark_non_differentiable(gs, gt)  # internal: only the loss leaves dkd_loss
    ctx.save_for_backward(gs, gt)
    ctx.set_materialize_grads(False)  # no zero (B, C) grads for the internal outputs
    ctx.grad_s, ctx.grad_t = inputs[5], inputs[6]


def _backward(ctx, grad_rows, _grad_gs, _grad_gt):
    gs, gt = ctx.saved_tensors
    # The row losses only feed the .sum() in the public function, so grad_rows is grad_output
    # expanded: take it as a 0-dim view (no sync, no launch; keeps the grads in the input dtype).
    grad_loss = grad_rows[0]
    g_s = gs * grad_loss if ctx.grad_s else None
    g_t = gt * grad_loss if ctx.grad_t else None
    # View b enters with a minus sign: d/dx_b = -d/dx_a.
    return g_s, None if g_s is None else -g_s, g_t, None if g_t is None else -g_t, None, None, None


_dkd_op.register_autograd(_backward, setup_context=_setup_context)


def dkd_loss(
    s_logits_a: torch.Tensor,
    s_logits_b: torch.Tensor,
    t_logits_a: torch.Tensor,
    t_logits_b: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Difference KD: T^2/2 * mean_i [KL(sm(d_t/T) || sm(d_s/T)) + KL(sm(-d_t/T) || sm(-d_s/T))], d = y_a - y_b."""
    grad = torch.is_grad_enabled()
    grad_s = grad and (s_logits_a.requires_grad or s_logits_b.requires_grad)
    grad_t = grad and (t_logits_a.requires_grad or t_logits_b.requires_grad)
    rows, _, _ = _dkd_op(s_logits_a, s_logits_b, t_logits_a, t_logits_b, float(temperature), grad_s, grad_t)
    return rows.sum()
