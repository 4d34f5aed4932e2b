"""CCD's channel-correlation loss L_eye as fused Triton kernels; twin of `kernels.reference.ccd_loss`.

Notation: x = f_s or f_t, (B, d). Per channel i over the batch: mu_i = mean_b x_bi,
var_i = mean_b (x_bi - mu_i)^2 (biased), r_i = 1 / sqrt(var_i + eps), c_bi = (x_bi - mu_i) r_i.
    Corr = c_s^T c_t / B                                              (d x d)
    L = sum_i (1 - Corr_ii)^2 + w * sum_{i != j} Corr_ij^2,   w = theta / (d - 1)   (w = 0 when d = 1)

Forward: one small kernel for (mu, r) of both inputs, then one program per (I, J) tile of Corr that
streams the batch in BLOCK_K chunks, standardises them on load and accumulates c_s[:, I]^T c_t[:, J]
with tl.dot; its epilogue turns the tile into its share of L (diagonal entries only where i == j),
so the d x d matrix never leaves registers. Per-tile partial sums are added on the host side
(deterministic, no atomics).

Backward (g = dloss):
    G_ij = dL/dCorr_ij = g * (-2 (1 - Corr_ii) if i == j else 2 w Corr_ij)
    dL/dc_s = c_t G^T / B,   dL/dc_t = c_s G / B
    through the standardisation (BatchNorm backward, exact with eps inside the sqrt), per channel i:
    dx_i = r_i (h_i - mean_b h_i - c_i mean_b(h_i c_i)),   h = dL/dc
Two identities make this a single sweep per input: mean_b h_bi = sum_j mean_b(c_other_bj) G_ij / B = 0
because every standardised column has zero mean, and
    mean_b(h_bi c_own_bi) = sum_j G_ij (sum_b c_own_bi c_other_bj / B) / B = sum_j G_ij Corr_ij / B,
a row sum of the tile the program already holds. So for the student (own = s, other = t):
    dx_s[b, i] = r_i / B * (sum_j c_t[b, j] G_ij - c_s[b, i] sum_j G_ij Corr_ij)
and the teacher's is the same with s and t swapped, because G(Corr^T) = G(Corr)^T. One program owns a
channel block I and a batch block, walks the channel blocks J, recomputes Corr[I, J] over the whole
batch, and accumulates both sums. The backward keeps only the inputs and the four fp32 d-vectors
(mu, r per input), 16 d bytes; Corr is recomputed (2 B d^2 FLOPs per input) rather than stored as a
d x d matrix. The forward cannot cheaply emit the gradient: each tile's G feeds every row of dc,
which would need atomics across tiles.

Precision: every tl.dot takes fp32 operands with input_precision="ieee" (CUDA-core FMA, ~67 TFLOP/s on
an H100, not the tensor cores' 989 bf16 / 494 tf32; build_specs says so in dot_flops). Unlike ICD's
similarity dots, no operand is a raw input: both dots multiply computed fp32 values (the standardised
c = (x - mu) r, and the gradient tile G), so a bf16 or tf32 dot would round them (2^-9 / 2^-11 per
entry) even for bf16 inputs, silently; they stay fp32. The interpreter tests verify this one path
(the interpreter's bf16 dot is wrong anyway). Cost at production (B = 256,
d = 2048): ~2 GFLOP forward and ~4 GFLOP backward per input that needs a gradient (the teacher's
usually does not), a few hundred microseconds at CUDA-core fp32 rates (estimate, not measured).
"""
import torch
import triton
import triton.language as tl

from kernels._spec import KernelSpec


@triton.jit
def _channel_stats(
    x_ptr,  # (B, d) features, row-major, bf16/fp32
    offs_ch,  # (BLOCK_C,) channel indices
    B,
    d,
    eps,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """(mean, 1/sqrt(biased var + eps)) per channel, fp32; two passes over the batch for accuracy."""
    ch_ok = (offs_ch < d)[None, :]
    offs_b = tl.arange(0, BLOCK_B)
    ptrs = x_ptr + offs_b[:, None] * d + offs_ch[None, :]
    step = BLOCK_B * d
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        x = tl.load(ptrs, mask=ch_ok & (offs_b[:, None] < B - b0), other=0.0).to(tl.float32)
        total += tl.sum(x, axis=0)
        ptrs += step
    mean = total / B
    ptrs = x_ptr + offs_b[:, None] * d + offs_ch[None, :]
    sq = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        mask = ch_ok & (offs_b[:, None] < B - b0)
        x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        dev = tl.where(mask, x - mean[None, :], 0.0)
        sq += tl.sum(dev * dev, axis=0)
        ptrs += step
    return mean, 1.0 / tl.sqrt_rn(sq / B + eps)


@triton.jit
def _ccd_stats_kernel(
    fs_ptr,  # (B, d) student features, bf16/fp32
    ft_ptr,  # (B, d) teacher features, bf16/fp32
    mean_s_ptr,  # (d,) fp32 out
    rstd_s_ptr,  # (d,) fp32 out
    mean_t_ptr,  # (d,) fp32 out
    rstd_t_ptr,  # (d,) fp32 out
    B,
    d,
    eps,
    BLOCK_B: tl.constexpr,  # batch chunk
    BLOCK_C: tl.constexpr,  # channels per program
):
    offs_ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = offs_ch < d
    mean, rstd = _channel_stats(fs_ptr, offs_ch, B, d, eps, BLOCK_B, BLOCK_C)
    tl.store(mean_s_ptr + offs_ch, mean, mask=ok)
    tl.store(rstd_s_ptr + offs_ch, rstd, mask=ok)
    mean, rstd = _channel_stats(ft_ptr, offs_ch, B, d, eps, BLOCK_B, BLOCK_C)
    tl.store(mean_t_ptr + offs_ch, mean, mask=ok)
    tl.store(rstd_t_ptr + offs_ch, rstd, mask=ok)


@triton.jit
def _corr_tile(
    a_ptrs,  # (BLOCK_I, BLOCK_K) pointers to a[k, i] for batch rows k < BLOCK_K: channels I of a, transposed
    b_ptrs,  # (BLOCK_K, BLOCK_J) pointers to b[k, j]: channels J of b
    a_ok,  # (BLOCK_I, 1) channel i < d
    b_ok,  # (1, BLOCK_J) channel j < d
    mean_a,  # (BLOCK_I, 1) fp32 stats of a's channels
    rstd_a,
    mean_b,  # (1, BLOCK_J) fp32 stats of b's channels
    rstd_b,
    B,
    d,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Corr[I, J] = c_a[:, I]^T c_b[:, J] / B as a (BLOCK_I, BLOCK_J) fp32 tile, standardising on load."""
    k_row = tl.arange(0, BLOCK_K)[None, :]
    k_col = tl.arange(0, BLOCK_K)[:, None]
    step = BLOCK_K * d
    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    for k0 in range(0, B, BLOCK_K):
        k_left = B - k0
        ka = k_row < k_left
        kb = k_col < k_left
        xa = tl.load(a_ptrs, mask=a_ok & ka, other=0.0).to(tl.float32)
        xb = tl.load(b_ptrs, mask=kb & b_ok, other=0.0).to(tl.float32)
        ca = tl.where(ka, (xa - mean_a) * rstd_a, 0.0)  # padded batch rows must be 0, not -mean * rstd
        cb = tl.where(kb, (xb - mean_b) * rstd_b, 0.0)
        # ca, cb are computed fp32 (not the bf16 inputs): a bf16/tf32 dot would round them, so fp32 "ieee"
        acc = tl.dot(ca, cb, acc, input_precision="ieee")
        a_ptrs += step
        b_ptrs += step
    return acc / B


@triton.jit
def _ccd_fwd_kernel(
    fs_ptr,  # (B, d) student features, bf16/fp32
    ft_ptr,  # (B, d) teacher features, bf16/fp32
    mean_s_ptr,  # (d,) fp32
    rstd_s_ptr,  # (d,) fp32
    mean_t_ptr,  # (d,) fp32
    rstd_t_ptr,  # (d,) fp32
    part_ptr,  # (cdiv(d, BLOCK_I) * cdiv(d, BLOCK_J),) fp32 out: each tile's share of L
    B,
    d,
    off_weight,  # theta / (d - 1), 0 when d == 1
    BLOCK_I: tl.constexpr,  # student channels per tile
    BLOCK_J: tl.constexpr,  # teacher channels per tile
    BLOCK_K: tl.constexpr,  # batch chunk of the dot
):
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_k = tl.arange(0, BLOCK_K)
    i_ok = offs_i < d
    j_ok = offs_j < d
    corr = _corr_tile(
        fs_ptr + offs_k[None, :] * d + offs_i[:, None], ft_ptr + offs_k[:, None] * d + offs_j[None, :],
        i_ok[:, None], j_ok[None, :],
        tl.load(mean_s_ptr + offs_i, mask=i_ok, other=0.0)[:, None],
        tl.load(rstd_s_ptr + offs_i, mask=i_ok, other=0.0)[:, None],
        tl.load(mean_t_ptr + offs_j, mask=j_ok, other=0.0)[None, :],
        tl.load(rstd_t_ptr + offs_j, mask=j_ok, other=0.0)[None, :],
        B, d, BLOCK_I, BLOCK_J, BLOCK_K,
    )
    on_diag = offs_i[:, None] == offs_j[None, :]
    err = tl.where(on_diag, (1.0 - corr) * (1.0 - corr), off_weight * corr * corr)
    err = tl.where(i_ok[:, None] & j_ok[None, :], err, 0.0)
    tl.store(part_ptr + pid_i * tl.num_programs(1) + pid_j, tl.sum(tl.sum(err, axis=1), axis=0))


@triton.jit
def _ccd_bwd_kernel(
    own_ptr,  # (B, d) features whose gradient this launch writes (f_s, or f_t for the teacher)
    other_ptr,  # (B, d) the other input
    mean_own_ptr,  # (d,) fp32
    rstd_own_ptr,  # (d,) fp32
    mean_other_ptr,  # (d,) fp32
    rstd_other_ptr,  # (d,) fp32
    grad_out_ptr,  # () fp32 dloss
    dx_ptr,  # (B, d) out, own dtype
    B,
    d,
    off_weight2,  # 2 theta / (d - 1), 0 when d == 1
    BLOCK_I: tl.constexpr,  # own channels per program (grid axis 0)
    BLOCK_J: tl.constexpr,  # other channels per step
    BLOCK_K: tl.constexpr,  # batch chunk of the Corr recompute
    BLOCK_BO: tl.constexpr,  # batch rows of dx per program (grid axis 1)
):
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_bo = tl.program_id(1) * BLOCK_BO + tl.arange(0, BLOCK_BO)
    offs_j = tl.arange(0, BLOCK_J)
    offs_k = tl.arange(0, BLOCK_K)
    i_ok = offs_i < d
    bo_ok = (offs_bo < B)[:, None]
    mean_i = tl.load(mean_own_ptr + offs_i, mask=i_ok, other=0.0)
    rstd_i = tl.load(rstd_own_ptr + offs_i, mask=i_ok, other=0.0)
    g = tl.load(grad_out_ptr).to(tl.float32)
    own_t = own_ptr + offs_k[None, :] * d + offs_i[:, None]  # (BLOCK_I, BLOCK_K), same for every J
    other_k = offs_k[:, None] * d + offs_j[None, :]  # (BLOCK_K, BLOCK_J) offsets from column j0
    other_bo = offs_bo[:, None] * d + offs_j[None, :]  # (BLOCK_BO, BLOCK_J) offsets from column j0

    h = tl.zeros((BLOCK_BO, BLOCK_I), dtype=tl.float32)  # sum_j c_other[b, j] G_ij
    gc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)  # sum_j G_ij Corr_ij, summed over j after the loop
    for j0 in range(0, d, BLOCK_J):
        j_ok = offs_j < d - j0
        mean_j = tl.load(mean_other_ptr + j0 + offs_j, mask=j_ok, other=0.0)[None, :]
        rstd_j = tl.load(rstd_other_ptr + j0 + offs_j, mask=j_ok, other=0.0)[None, :]
        corr = _corr_tile(own_t, other_ptr + j0 + other_k, i_ok[:, None], j_ok[None, :], mean_i[:, None],
                          rstd_i[:, None], mean_j, rstd_j, B, d, BLOCK_I, BLOCK_J, BLOCK_K)
        on_diag = offs_i[:, None] == offs_j[None, :] + j0
        grad = g * tl.where(on_diag, -2.0 * (1.0 - corr), off_weight2 * corr)
        grad = tl.where(i_ok[:, None] & j_ok[None, :], grad, 0.0)  # padding contributes nothing
        gc += grad * corr
        mask = bo_ok & j_ok[None, :]
        x_other = tl.load(other_ptr + j0 + other_bo, mask=mask, other=0.0).to(tl.float32)
        c_other = tl.where(mask, (x_other - mean_j) * rstd_j, 0.0)
        h = tl.dot(c_other, tl.trans(grad), h, input_precision="ieee")  # computed fp32 operands: see _corr_tile

    mask = bo_ok & i_ok[None, :]
    own = own_ptr + offs_bo[:, None] * d + offs_i[None, :]
    c_own = (tl.load(own, mask=mask, other=0.0).to(tl.float32) - mean_i[None, :]) * rstd_i[None, :]
    dx = rstd_i[None, :] * (h - c_own * tl.sum(gc, axis=1)[None, :]) / B
    tl.store(dx_ptr + offs_bo[:, None] * d + offs_i[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- host side


def _config(B: int, d: int) -> dict:
    """Tile sizes and launch options at (B, d), shared by the launchers and `build_specs`.

    Every dot dimension is >= 16 (GPU tl.dot minimum). fp32 FMA dots hold a thread's share of both
    operands for the whole K chunk in registers, so K chunks stay at 16-32. The backward owns up to
    256 batch rows per program, so for B <= 256 Corr is recomputed once per input (beyond that, once
    per 256 rows); its h slab (BLOCK_BO x BLOCK_I) and the other input's (BLOCK_BO x BLOCK_J) tile
    share the registers with the Corr dot, so with 256 rows it takes 16 own channels (d = 2048: 128
    programs per input) and 16-row K chunks, with <= 64 rows 32 x 32 tiles.
    Checked with ptxas for sm_80/sm_90 (no spills) at B = 7..512, d = 64..2048, bf16 and fp32.
    """
    chan = min(64, max(16, triton.next_power_of_2(d)))
    batch = min(32, max(16, triton.next_power_of_2(B)))
    rows = min(256, max(16, triton.next_power_of_2(B)))
    if rows <= 64:
        bwd = dict(BLOCK_I=min(32, chan), BLOCK_J=min(32, chan), BLOCK_K=batch)
    else:
        bwd = dict(BLOCK_I=16, BLOCK_J=min(32, chan), BLOCK_K=16)
    return dict(
        stats=dict(BLOCK_B=batch, BLOCK_C=chan, num_warps=4, num_stages=2),
        fwd=dict(BLOCK_I=chan, BLOCK_J=chan, BLOCK_K=batch, num_warps=8, num_stages=2),
        bwd=dict(**bwd, BLOCK_BO=rows, num_warps=8, num_stages=2),
    )


def _launch_opts(cfg: dict) -> tuple[dict, int, int]:
    meta = dict(cfg)
    return meta, meta.pop("num_warps"), meta.pop("num_stages")


def _forward(f_s, f_t, theta, eps):
    B, d = f_s.shape
    cfg = _config(B, d)
    dev = f_s.device
    mean_s, rstd_s, mean_t, rstd_t = (torch.empty((d,), dtype=torch.float32, device=dev) for _ in range(4))
    meta, warps, stages = _launch_opts(cfg["stats"])
    _ccd_stats_kernel[(triton.cdiv(d, meta["BLOCK_C"]),)](
        f_s, f_t, mean_s, rstd_s, mean_t, rstd_t, B, d, eps, **meta, num_warps=warps, num_stages=stages)
    meta, warps, stages = _launch_opts(cfg["fwd"])
    grid = (triton.cdiv(d, meta["BLOCK_I"]), triton.cdiv(d, meta["BLOCK_J"]))
    part = torch.empty((grid[0] * grid[1],), dtype=torch.float32, device=dev)
    off_weight = theta / (d - 1) if d > 1 else 0.0
    _ccd_fwd_kernel[grid](f_s, f_t, mean_s, rstd_s, mean_t, rstd_t, part, B, d, off_weight,
                          **meta, num_warps=warps, num_stages=stages)
    return part.sum(), mean_s, rstd_s, mean_t, rstd_t


def _backward(grad, f_s, f_t, mean_s, rstd_s, mean_t, rstd_t, theta, student, teacher):
    """df_s if `student`, df_t if `teacher`; a skipped one comes back empty."""
    B, d = f_s.shape
    meta, warps, stages = _launch_opts(_config(B, d)["bwd"])
    grid = (triton.cdiv(d, meta["BLOCK_I"]), triton.cdiv(B, meta["BLOCK_BO"]))
    off_weight2 = 2.0 * theta / (d - 1) if d > 1 else 0.0
    grads = []
    for own, other, stats, wanted in ((f_s, f_t, (mean_s, rstd_s, mean_t, rstd_t), student),
                                      (f_t, f_s, (mean_t, rstd_t, mean_s, rstd_s), teacher)):
        dx = torch.empty((B, d) if wanted else (0,), dtype=own.dtype, device=own.device)
        if wanted:
            _ccd_bwd_kernel[grid](own, other, *stats, grad, dx, B, d, off_weight2,
                                  **meta, num_warps=warps, num_stages=stages)
        grads.append(dx)
    return grads[0], grads[1]


# ----------------------------------------------------------------------------- autograd


@torch.library.custom_op("kernels::ccd_loss", mutates_args=())
def _ccd_loss_op(
    f_s: torch.Tensor, f_t: torch.Tensor, theta: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, mean_s, rstd_s, mean_t, rstd_t); the four d-vectors are what the backward keeps."""
    return _forward(f_s.contiguous(), f_t.contiguous(), theta, eps)


@_ccd_loss_op.register_fake
def _(f_s, f_t, theta, eps):
    d = f_s.shape[1]
    return (f_s.new_empty((), dtype=torch.float32),
            *(f_s.new_empty((d,), dtype=torch.float32) for _ in range(4)))


@torch.library.custom_op("kernels::ccd_loss_backward", mutates_args=())
def _ccd_loss_backward_op(
    grad: torch.Tensor, f_s: torch.Tensor, f_t: torch.Tensor, mean_s: torch.Tensor, rstd_s: torch.Tensor,
    mean_t: torch.Tensor, rstd_t: torch.Tensor, theta: float, student: bool, teacher: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(grad, f_s.contiguous(), f_t.contiguous(), mean_s, rstd_s, mean_t, rstd_t, theta,
                     student, teacher)


@_ccd_loss_backward_op.register_fake
def _(grad, f_s, f_t, mean_s, rstd_s, mean_t, rstd_t, theta, student, teacher):
    # Contiguous, as the real op returns (new_empty, not empty_like, which keeps a strided input's strides).
    return (f_s.new_empty(f_s.shape) if student else f_s.new_empty(0),
            f_t.new_empty(f_t.shape) if teacher else f_t.new_empty(0))


def _setup_context(ctx, inputs, output):
    f_s, f_t, theta, _eps = inputs
    _, *stats = output
    ctx.save_for_backward(f_s, f_t, *stats)
    ctx.theta = theta
    ctx.mark_non_differentiable(*stats)


def _backward_autograd(ctx, grad, *_unused_stat_grads):
    f_s, f_t, *stats = ctx.saved_tensors
    need_s, need_t = ctx.needs_input_grad[:2]  # teacher features are usually detached: skip that launch
    df_s, df_t = _ccd_loss_backward_op(grad, f_s, f_t, *stats, ctx.theta, student=need_s, teacher=need_t)
    return (df_s if need_s else None), (df_t if need_t else None), None, None


_ccd_loss_op.register_autograd(_backward_autograd, setup_context=_setup_context)


def ccd_loss(f_s: torch.Tensor, f_t: torch.Tensor, theta: float = 2.0, eps: float = 1e-5) -> torch.Tensor:
    """Fused twin of `kernels.reference.ccd_loss`: (B, d) f_s, f_t; fp32 0-dim loss.

    B = 1 follows the reference: every standardised value is 0, so Corr = 0, the loss is d and both
    gradients are exactly 0.
    """
    assert f_s.ndim == 2 and f_s.shape == f_t.shape, (f_s.shape, f_t.shape)
    return _ccd_loss_op(f_s, f_t, float(theta), float(eps))[0]


# ----------------------------------------------------------------------------- build specs


def _dtype(dtype) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, dtype)


def build_specs(B: int = 256, d: int = 2048, dtype: torch.dtype = torch.bfloat16,
                teacher_grad: bool = False, teacher_dtype=None) -> list[KernelSpec]:
    """The launches production makes at (B, d, dtype): stats, forward, the student's backward, and the
    teacher's backward only if teacher_grad (DCCD detaches the teacher's features). `dtype` is the student
    features' (M_s's output), `teacher_dtype` the teacher's (default: the same; under the trainer's bf16
    autocast the student's are bf16 and the teacher's fp32)."""
    dtype = _dtype(dtype)
    teacher_dtype = dtype if teacher_dtype is None else _dtype(teacher_dtype)
    cfg = _config(B, d)
    ptr = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}
    xs, xt, f32 = ptr[dtype], ptr[teacher_dtype], "*fp32"
    elt_s = torch.empty((), dtype=dtype).element_size()
    elt_t = torch.empty((), dtype=teacher_dtype).element_size()
    stats_sig = {"mean_s_ptr": f32, "rstd_s_ptr": f32, "mean_t_ptr": f32, "rstd_t_ptr": f32}
    specs = []

    meta, warps, stages = _launch_opts(cfg["stats"])
    specs.append(KernelSpec(
        name="ccd.stats", fn=_ccd_stats_kernel,
        signature={"fs_ptr": xs, "ft_ptr": xt, **stats_sig, "B": "i32", "d": "i32", "eps": "fp32",
                   "BLOCK_B": "constexpr", "BLOCK_C": "constexpr"},
        constexprs=meta, num_warps=warps, num_stages=stages, grid=(triton.cdiv(d, meta["BLOCK_C"]),),
        bytes_moved=B * d * (elt_s + elt_t) + 4 * d * 4,
        flops=2 * 5 * B * d,  # sum, then subtract/square/add, per element and input
    ))

    meta, warps, stages = _launch_opts(cfg["fwd"])
    n_i, n_j = triton.cdiv(d, meta["BLOCK_I"]), triton.cdiv(d, meta["BLOCK_J"])
    specs.append(KernelSpec(
        name="ccd.forward", fn=_ccd_fwd_kernel,
        signature={"fs_ptr": xs, "ft_ptr": xt, **stats_sig, "part_ptr": f32, "B": "i32", "d": "i32",
                   "off_weight": "fp32", "BLOCK_I": "constexpr", "BLOCK_J": "constexpr", "BLOCK_K": "constexpr"},
        constexprs=meta, num_warps=warps, num_stages=stages, grid=(n_i, n_j),
        bytes_moved=B * d * (elt_s + elt_t) + 4 * d * 4 + 4 * n_i * n_j,
        # the Corr dot; standardising each loaded element once per tile it feeds; ~6 flops per Corr entry
        flops=2 * B * d * d + 2 * B * d * (n_i + n_j) + 6 * d * d,
        dot_flops={"ieee_fp32": 2 * B * d * d},
    ))

    meta, warps, stages = _launch_opts(cfg["bwd"])
    n_i, n_j = triton.cdiv(d, meta["BLOCK_I"]), triton.cdiv(d, meta["BLOCK_J"])
    grid = (n_i, triton.cdiv(B, meta["BLOCK_BO"]))
    sides = [("student", xs, xt, elt_s, elt_t)] + ([("teacher", xt, xs, elt_t, elt_s)] if teacher_grad else [])
    for who, own, other, elt_own, elt_other in sides:
        specs.append(KernelSpec(
            name=f"ccd.backward_{who}", fn=_ccd_bwd_kernel,
            signature={"own_ptr": own, "other_ptr": other, "mean_own_ptr": f32, "rstd_own_ptr": f32,
                       "mean_other_ptr": f32, "rstd_other_ptr": f32, "grad_out_ptr": f32, "dx_ptr": own,
                       "B": "i32", "d": "i32", "off_weight2": "fp32", "BLOCK_I": "constexpr",
                       "BLOCK_J": "constexpr", "BLOCK_K": "constexpr", "BLOCK_BO": "constexpr"},
            constexprs=meta, num_warps=warps, num_stages=stages, grid=grid,
            bytes_moved=B * d * (2 * elt_own + elt_other) + 4 * d * 4 + 4,  # read both inputs, write dx
            # per batch block: the Corr recompute with its standardisation and ~8 flops per entry for G;
            # then the h dot and its standardised operand
            flops=grid[1] * (2 * B * d * d + 2 * B * d * (n_i + n_j) + 8 * d * d) + 2 * B * d * d + 2 * B * d * n_i,
            dot_flops={"ieee_fp32": grid[1] * 2 * B * d * d + 2 * B * d * d},
        ))
    return specs
