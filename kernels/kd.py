"""Fused Hinton KD loss, twin of `kernels.reference.kd_loss`.

One Triton program per row reads the student and teacher logits once and writes the row's KL and
the gradient w.r.t. the student logits (and w.r.t. the teacher logits when they require grad). The
forward saves that gradient; the backward only scales it by grad_output (as Liger's jsd does).
Torch ops around the kernel: the (B,) row-loss sum, and in backward one multiply per gradient.
"""
import torch
import triton
import triton.language as tl

from kernels._spec import KernelSpec

NEG = tl.constexpr(-1.0e30)  # finite "-inf" for masked lanes: exp(NEG - m) == 0, NEG - NEG == 0, never inf - inf
MAX_BLOCK_C = 4096  # widest row kept in registers (16 warps x 8 values/thread); wider rows stream in blocks


# Per row, with a = s/T, b = t/T, p = softmax(a), q = softmax(b), loss = T^2/B * sum_rows KL:
#   KL = sum_j q_j (log q_j - log p_j),       log p_j = a_j - lse(a),  log q_j = b_j - lse(b)
#      = w / z_b - lse(b) + lse(a),           z_b = sum_j exp(b_j - m_b),  w = sum_j exp(b_j - m_b) (b_j - a_j)
#   d loss / d s_j = T/B * (p_j - q_j)
#   d loss / d t_j = T/B * q_j * (log q_j - log p_j - KL)      [d q_k / d b_j = q_k (delta_kj - q_j)]
# Online over blocks: running maxima m, sums z and w are rescaled by exp(m_old - m_new) when the
# maximum grows (from m = NEG, z = w = 0 a single block gives the exact values directly).
@triton.jit
def _load_scaled(ptr, offs, mask, inv_t):
    x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_t
    return tl.where(mask, x, NEG)


@triton.jit
def _kl_update(
    m_a, z_a,  # running max / sum of exp(a - m_a), fp32 scalars
    m_b, z_b, w,  # same for b, plus w = sum exp(b - m_b) * (b - a)
    a,  # (BLOCK_C,) fp32 student logits / T, masked lanes NEG
    b,  # (BLOCK_C,) fp32 teacher logits / T, masked lanes NEG
):
    new_m_a = tl.maximum(m_a, tl.max(a, 0))
    z_a = z_a * tl.exp(m_a - new_m_a) + tl.sum(tl.exp(a - new_m_a), 0)
    new_m_b = tl.maximum(m_b, tl.max(b, 0))
    rescale = tl.exp(m_b - new_m_b)
    e_b = tl.exp(b - new_m_b)
    z_b = z_b * rescale + tl.sum(e_b, 0)
    w = w * rescale + tl.sum(e_b * (b - a), 0)
    return new_m_a, z_a, new_m_b, z_b, w


@triton.jit
def _kl_finish(m_a, z_a, m_b, z_b, w):
    lse_a = m_a + tl.log(z_a)
    lse_b = m_b + tl.log(z_b)
    return w / z_b - lse_b + lse_a, lse_a, lse_b


@triton.jit
def _kl_grads(a, b, lse_a, lse_b, kl):
    """d KL / d a and d KL / d b on one block (masked lanes give 0: p = q = 0 there)."""
    log_p = a - lse_a
    log_q = b - lse_b
    q = tl.exp(log_q)
    return tl.exp(log_p) - q, q * (log_q - log_p - kl)


@triton.jit
def _kd_kernel(
    s_ptr,  # (B, C) student logits, fp32/bf16, contiguous
    t_ptr,  # (B, C) teacher logits, fp32/bf16, contiguous
    loss_ptr,  # (B,) fp32 out: T^2/B * KL of each row
    gs_ptr,  # (B, C) out, s dtype: d loss / d s (written iff GRAD_S)
    gt_ptr,  # (B, C) out, t dtype: d loss / d t (written iff GRAD_T)
    C,  # i32: classes
    inv_t,  # fp32: 1 / T
    loss_scale,  # fp32: T^2 / B
    grad_scale,  # fp32: T / B
    BLOCK_C: tl.constexpr,  # power of 2, <= MAX_BLOCK_C
    SINGLE_BLOCK: tl.constexpr,  # C <= BLOCK_C: the row stays in registers and is read once
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s_ptr += row * C
    t_ptr += row * C
    gs_ptr += row * C
    gt_ptr += row * C
    offs = tl.arange(0, BLOCK_C)
    if SINGLE_BLOCK:
        mask = offs < C
        a = _load_scaled(s_ptr, offs, mask, inv_t)
        b = _load_scaled(t_ptr, offs, mask, inv_t)
        neg, zero = tl.full((), NEG, tl.float32), tl.zeros((), tl.float32)
        m_a, z_a, m_b, z_b, w = _kl_update(neg, zero, neg, zero, zero, a, b)
        kl, lse_a, lse_b = _kl_finish(m_a, z_a, m_b, z_b, w)
        d_a, d_b = _kl_grads(a, b, lse_a, lse_b, kl)
        if GRAD_S:
            tl.store(gs_ptr + offs, (grad_scale * d_a).to(gs_ptr.dtype.element_ty), mask=mask)
        if GRAD_T:
            tl.store(gt_ptr + offs, (grad_scale * d_b).to(gt_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: online statistics; pass 2 re-reads the row (from L2, usually) to write gradients.
        m_a = tl.full((), NEG, tl.float32)
        m_b = tl.full((), NEG, tl.float32)
        z_a = tl.zeros((), tl.float32)
        z_b = tl.zeros((), tl.float32)
        w = tl.zeros((), tl.float32)
        for start in range(0, C, BLOCK_C):
            mask = start + offs < C
            a = _load_scaled(s_ptr + start, offs, mask, inv_t)
            b = _load_scaled(t_ptr + start, offs, mask, inv_t)
            m_a, z_a, m_b, z_b, w = _kl_update(m_a, z_a, m_b, z_b, w, a, b)
        kl, lse_a, lse_b = _kl_finish(m_a, z_a, m_b, z_b, w)
        if GRAD_S or GRAD_T:
            for start in range(0, C, BLOCK_C):
                mask = start + offs < C
                a = _load_scaled(s_ptr + start, offs, mask, inv_t)
                b = _load_scaled(t_ptr + start, offs, mask, inv_t)
                d_a, d_b = _kl_grads(a, b, lse_a, lse_b, kl)
                if GRAD_S:
                    tl.store(gs_ptr + start + offs, (grad_scale * d_a).to(gs_ptr.dtype.element_ty), mask=mask)
                if GRAD_T:
                    tl.store(gt_ptr + start + offs, (grad_scale * d_b).to(gt_ptr.dtype.element_ty), mask=mask)
    tl.store(loss_ptr + row, loss_scale * kl)


# ---------------------------------------------------------------- host launchers
_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Per element (exp/log count 1): 2 scales; sums: 3 (sub, exp, add) for a, for b, and for w (sub, mul, add);
# d/ds: 2 log-prob subs, 2 exps, p - q, scale = 6; d/dt adds sub, sub, mul, scale = 4.
FLOPS_PER_ELEMENT = {False: 2 + 9 + 6, True: 2 + 9 + 6 + 4}


def row_config(C: int) -> dict:
    """Block size and warps for rows of C classes; shared by the launchers here, dkd.py and build_specs.

    Up to 8 values per thread and array (16/32-byte vector loads). Streamed rows use half-width
    blocks: the two-pass DKD loop at 16 warps (<= 128 registers/thread) spills on sm_80/sm_90;
    at 8 warps it does not (tests/kernels/test_gpu_build.py checks both).
    """
    block = triton.next_power_of_2(C)
    if block > MAX_BLOCK_C:
        block = MAX_BLOCK_C // 2
    return {"BLOCK_C": block, "SINGLE_BLOCK": C <= block, "num_warps": max(1, min(16, block // 256))}


def check_logits(*tensors: torch.Tensor) -> None:
    first = tensors[0]
    for x in tensors:
        if x.dim() != 2 or x.shape != first.shape or x.device != first.device:
            raise ValueError(f"expected (B, C) logits of one shape and device, got {[tuple(t.shape) for t in tensors]}")
        if x.dtype not in _DTYPES:
            raise TypeError(f"Triton losses take {list(_DTYPES)} logits, got {x.dtype}; use kernels.reference")
    if first.numel() == 0:
        raise ValueError(f"empty logits {tuple(first.shape)}")
    if not first.is_cuda and not triton.knobs.runtime.interpret:
        raise RuntimeError("Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")


def _forward(s, t, temperature: float, grad_s: bool, grad_t: bool):
    check_logits(s, t)
    s, t = s.contiguous(), t.contiguous()
    B, C = s.shape
    loss_rows = torch.empty(B, dtype=torch.float32, device=s.device)
    gs = torch.empty_like(s) if grad_s else s.new_empty(0)
    gt = torch.empty_like(t) if grad_t else t.new_empty(0)
    cfg = row_config(C)
    _kd_kernel[(B,)](
        s, t, loss_rows, gs if grad_s else s, gt if grad_t else t,  # unused grad pointers are never written
        C, 1.0 / temperature, temperature**2 / B, temperature / B,
        BLOCK_C=cfg["BLOCK_C"], SINGLE_BLOCK=cfg["SINGLE_BLOCK"], GRAD_S=grad_s, GRAD_T=grad_t,
        num_warps=cfg["num_warps"],
    )
    return loss_rows, gs, gt


ELEMENT_SIZE = {"fp32": 4, "bf16": 2, "fp16": 2}


def build_specs(B: int = 256, C: int = 1000, dtype: str = "bf16", teacher_grad: bool = False,
                teacher_dtype: str | None = None) -> list[KernelSpec]:
    """The launch production makes at these sizes: student grad only (the teacher is frozen) unless teacher_grad.
    `dtype` is the student logits', `teacher_dtype` the teacher's (default: the same; the trainer's bf16
    autocast gives bf16 student and fp32 teacher logits)."""
    teacher_dtype = teacher_dtype or dtype
    cfg = row_config(C)
    s_ptr, t_ptr = f"*{dtype}", f"*{teacher_dtype}"
    s_size, t_size = ELEMENT_SIZE[dtype], ELEMENT_SIZE[teacher_dtype]
    signature = {
        "s_ptr": s_ptr, "t_ptr": t_ptr, "loss_ptr": "*fp32", "gs_ptr": s_ptr, "gt_ptr": t_ptr,
        "C": "i32", "inv_t": "fp32", "loss_scale": "fp32", "grad_scale": "fp32",
        "BLOCK_C": "constexpr", "SINGLE_BLOCK": "constexpr", "GRAD_S": "constexpr", "GRAD_T": "constexpr",
    }
    constexprs = {"BLOCK_C": cfg["BLOCK_C"], "SINGLE_BLOCK": cfg["SINGLE_BLOCK"], "GRAD_S": True, "GRAD_T": teacher_grad}
    passes = 1 if cfg["SINGLE_BLOCK"] else 2
    return [KernelSpec(
        name="kd.forward", fn=_kd_kernel, signature=signature, constexprs=constexprs,
        num_warps=cfg["num_warps"], grid=(B,),
        # read s, t (per pass); write grads, row losses
        bytes_moved=(passes * (s_size + t_size) + s_size + teacher_grad * t_size) * B * C + B * 4,
        flops=FLOPS_PER_ELEMENT[teacher_grad] * B * C,
    )]


# ---------------------------------------------------------------- autograd wrapper
@torch.library.custom_op("kernels::kd_loss", mutates_args=())
def _kd_op(
    s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float, grad_s: bool, grad_t: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Internal (call kd_loss): returns (row losses (B,), d loss/d s, d loss/d t); a gradient not
    asked for is an empty tensor. loss = row losses .sum()."""
    return _forward(s_logits, t_logits, temperature, grad_s, grad_t)


@_kd_op.register_fake
def _(s_logits, t_logits, temperature, grad_s, grad_t):
    loss = s_logits.new_empty(s_logits.shape[:1], dtype=torch.float32)
    gs = torch.empty_like(s_logits, memory_format=torch.contiguous_format) if grad_s else s_logits.new_empty(0)
    gt = torch.empty_like(t_logits, memory_format=torch.contiguous_format) if grad_t else t_logits.new_empty(0)
    return loss, gs, gt


def _setup_context(ctx, inputs, output):
    _, gs, gt = output
    ctx.mark_non_differentiable(gs, gt)  # internal: only the loss leaves kd_loss
    ctx.save_for_backward(gs, gt)
    ctx.set_materialize_grads(False)  # no zero (B, C) grads for the internal outputs
    ctx.grad_s, ctx.grad_t = inputs[3], inputs[4]


def _backward(ctx, grad_rows, _grad_gs, _grad_gt):
    gs, gt = ctx.saved_tensors
    # The row losses only feed the .sum() in the public function, so grad_rows is grad_output
    # expanded: take it as a 0-dim view (no sync, no launch; keeps the grads in the input dtype).
    grad_loss = grad_rows[0]
    return (gs * grad_loss if ctx.grad_s else None, gt * grad_loss if ctx.grad_t else None, None, None, None)


_kd_op.register_autograd(_backward, setup_context=_setup_context)


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T)). s, t: (B, C); fp32 scalar."""
    grad = torch.is_grad_enabled()
    rows, _, _ = _kd_op(
        s_logits, t_logits, float(temperature), grad and s_logits.requires_grad, grad and t_logits.requires_grad
    )
    return rows.sum()
