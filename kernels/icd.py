"""ICD loss (in-batch contrast + alpha * invariance KL) as fused Triton kernels; twin of
`kernels.reference.icd_loss`.

Notation (rows a = students, columns c = teachers, both over the batch B):
    S_ac = <zs_a, zt_c>,  s = min(exp(log_scale), max_scale),  L_ac = s * S_ac + b
    rowLSE_a = logsumexp_c L_ac        R_ac = exp(L_ac - rowLSE_a)   (row softmax, "Q")
    colLSE_c = logsumexp_a L_ac        W_ac = exp(L_ac - colLSE_c)   (column softmax, "P" transposed)
    x_ac = L_ac - L_ca = s * (S_ac - S_ca)

Loss. contrast = mean_c (rowLSE_c - L_cc). The invariance KL of row c of P (column c of L):
    KL_c = sum_a W_ac (log W_ac - log R_ca) = sum_a W_ac x_ac + rowLSE_c - colLSE_c      (sum_a W_ac = 1)
so with t_c = sum_a W_ac x_ac the loss is mean_c [rowLSE_c - L_cc + alpha * (t_c + rowLSE_c - colLSE_c)].
Everything is a per-column reduction over a, so one program owns a block of columns c and streams
row blocks a, keeping online (max, sum-exp) pairs for colLSE_c (from L_ac) and rowLSE_c (from
L_ca, the transposed tile) and the flash-attention style rescaled t_c numerator. The B x B matrix
never leaves registers. Each tile costs two dots: S[A, C] = zs[A] zt[C]^T and S^T-tile = zt[A] zs[C]^T.

Gradient. With contrast' = (R - I)/B and differentiating KL through both softmaxes
(sum_a W_ac = 1 and sum_c R_ac = 1 make the log-normaliser terms collapse):
    dKL/dL_ac = W_ac (x_ac - t_c) + R_ac - W_ca
    G_ac = dloss/dL_ac = g/B * [R_ac - [a == c] + alpha * (W_ac (x_ac - t_c) + R_ac - W_ca)]
    dzs = s G zt,  dzt = s G^T zs,  dlog_scale = sum(G * S) * s * [exp(log_scale) <= max_scale],
    dbias = sum(G) = 0 exactly (b cancels in every softmax), returned as exact zeros.
The backward keeps only the inputs and three fp32 B-vectors (rowLSE, colLSE, t): 12 B bytes
instead of a B x B matrix, and every tile of G needs just those vectors plus the two recomputed
similarity tiles (two B x B x D dots per backward launch: cheap at D = 128). The forward cannot cheaply produce the
gradient (as Liger's jsd does): G needs the finished colLSE and t of every column, i.e. a second sweep.

Precision. The similarity dots (S and its transposed tile, forward and backward) take DOT_BF16:
  - bf16 inputs on a GPU (DOT_BF16=True): bf16 x bf16 tensor-core dots with fp32 accumulation. A product
    of two bf16 values (8-bit significands) is exact in fp32 (16 <= 24 bits), so the products are exactly
    those of the fp32 path; only the fp32 accumulation's order and rounding differ (fp32-level, far below
    the bf16 inputs' own rounding). No precision is lost, at the tensor-core rate (989 vs 67 TFLOP/s, H100).
  - fp32 inputs, and the Triton interpreter (TRITON_INTERPRET=1), whose bf16 tl.dot returns garbage
    (DOT_BF16=False): operands upcast to fp32 on load, input_precision="ieee" (CUDA-core FMA). The
    interpreter tests (tests/kernels/test_icd.py) therefore check the numerics of this fp32 path for
    bf16 inputs too; the bf16 path is only compiled (tests/kernels/test_gpu_build.py), not run, here.
The backward's output dot (G @ zt or G^T @ zs) stays fp32 "ieee" whatever the inputs: G is a computed
fp32 value, and casting it to bf16 for the tensor cores would round every entry (up to 2^-9 relative)
silently, with the error amplified where a row's terms cancel (the contrastive part of each row of G
sums to 0). It is a third of the backward's dot FLOPs but, with the similarity dots on tensor cores,
most of its time at peak (bench/kernel_report.py, B = 512, D = 128: ~1.0 of a ~1.2 us floor). At
production sizes (~0.5 GFLOP forward + backward) every launch here is a few microseconds either way.
"""
import torch
import triton
import triton.language as tl

from kernels._spec import KernelSpec


@triton.jit
def _icd_sim_tiles(
    zs_ptr,  # (B, D) student embeddings, row-major, bf16/fp32
    zt_ptr,  # (B, D) teacher embeddings, row-major, same dtype
    offs_a,  # (BLOCK_A,) row (student) indices of the tile
    offs_c,  # (BLOCK_C,) column (teacher) indices of the tile
    B,
    D,
    BLOCK_A: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_BF16: tl.constexpr,  # bf16 inputs, bf16 tensor-core dots (exact products); else fp32 "ieee" dots
):
    """Return (S[a, c], S[c, a]) as (BLOCK_A, BLOCK_C) fp32 tiles; out-of-range rows/columns give 0."""
    offs_k = tl.arange(0, BLOCK_K)
    a_ok = (offs_a < B)[:, None]
    c_ok = (offs_c < B)[None, :]
    rows_a = offs_a[:, None] * D + offs_k[None, :]  # (BLOCK_A, BLOCK_K)
    cols_c = offs_c[None, :] * D + offs_k[:, None]  # (BLOCK_K, BLOCK_C): column operands loaded transposed
    zs_a_ptrs, zt_a_ptrs = zs_ptr + rows_a, zt_ptr + rows_a
    zs_c_ptrs, zt_c_ptrs = zs_ptr + cols_c, zt_ptr + cols_c
    sim = tl.zeros((BLOCK_A, BLOCK_C), dtype=tl.float32)
    sim_t = tl.zeros((BLOCK_A, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        k_left = D - k0
        mask_a = a_ok & (offs_k[None, :] < k_left)
        mask_c = c_ok & (offs_k[:, None] < k_left)
        zs_a = tl.load(zs_a_ptrs, mask=mask_a, other=0.0)
        zt_a = tl.load(zt_a_ptrs, mask=mask_a, other=0.0)
        zt_c = tl.load(zt_c_ptrs, mask=mask_c, other=0.0)
        zs_c = tl.load(zs_c_ptrs, mask=mask_c, other=0.0)
        if DOT_BF16:  # GPU only: the interpreter's bf16 dot is garbage, so tests run the branch below
            sim = tl.dot(zs_a, zt_c, sim, out_dtype=tl.float32)
            sim_t = tl.dot(zt_a, zs_c, sim_t, out_dtype=tl.float32)
        else:
            sim = tl.dot(zs_a.to(tl.float32), zt_c.to(tl.float32), sim, input_precision="ieee")
            sim_t = tl.dot(zt_a.to(tl.float32), zs_c.to(tl.float32), sim_t, input_precision="ieee")
        zs_a_ptrs += BLOCK_K
        zt_a_ptrs += BLOCK_K
        zs_c_ptrs += BLOCK_K
        zt_c_ptrs += BLOCK_K
    return sim, sim_t


@triton.jit
def _icd_scale(log_scale_ptr, max_scale):
    """s = min(exp(log_scale), max_scale) and ds/dlog_scale (0 above the clamp, as torch.clamp)."""
    raw = tl.exp(tl.load(log_scale_ptr).to(tl.float32))
    unclamped = raw <= max_scale
    return tl.where(unclamped, raw, max_scale), tl.where(unclamped, raw, 0.0)


@triton.jit
def _icd_fwd_kernel(
    zs_ptr,  # (B, D) student embeddings, bf16/fp32
    zt_ptr,  # (B, D) teacher embeddings, same dtype
    log_scale_ptr,  # () tau, any float dtype
    bias_ptr,  # () b
    col_loss_ptr,  # (B,) fp32 out: column c's share of the loss, already divided by B
    row_lse_ptr,  # (B,) fp32 out: rowLSE_c (saved for backward)
    col_lse_ptr,  # (B,) fp32 out: colLSE_c (saved for backward)
    t_ptr,  # (B,) fp32 out: t_c = sum_a W_ac x_ac (saved for backward)
    B,
    D,
    alpha,  # invariance weight
    max_scale,
    BLOCK_M: tl.constexpr,  # rows a streamed per step
    BLOCK_N: tl.constexpr,  # columns c owned by this program
    BLOCK_K: tl.constexpr,  # D chunk of the dots
    DOT_BF16: tl.constexpr,  # see _use_bf16_dot
):
    offs_c = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = offs_c < B
    s, _ = _icd_scale(log_scale_ptr, max_scale)
    b = tl.load(bias_ptr).to(tl.float32)

    col_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)  # online colLSE_c over L_ac
    col_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    t_num = tl.zeros((BLOCK_N,), dtype=tl.float32)  # sum_a exp(L_ac - col_max) x_ac
    row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)  # online rowLSE_c over L_ca
    row_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    diag = tl.zeros((BLOCK_N,), dtype=tl.float32)  # S_cc
    for a0 in range(0, B, BLOCK_M):
        offs_a = a0 + tl.arange(0, BLOCK_M)
        a_ok = offs_a < B
        sim, sim_t = _icd_sim_tiles(zs_ptr, zt_ptr, offs_a, offs_c, B, D, BLOCK_M, BLOCK_N, BLOCK_K, DOT_BF16)
        # padded rows a drop out of every sum over a; padded columns are computed but never stored
        logits = tl.where(a_ok[:, None], s * sim + b, float("-inf"))  # L_ac
        logits_t = tl.where(a_ok[:, None], s * sim_t + b, float("-inf"))  # L_ca

        new_max = tl.maximum(col_max, tl.max(logits, axis=0))
        rescale = tl.exp(col_max - new_max)
        p = tl.exp(logits - new_max[None, :])
        col_sum = col_sum * rescale + tl.sum(p, axis=0)
        t_num = t_num * rescale + tl.sum(p * (s * (sim - sim_t)), axis=0)
        col_max = new_max

        new_max = tl.maximum(row_max, tl.max(logits_t, axis=0))
        row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(logits_t - new_max[None, :]), axis=0)
        row_max = new_max

        diag += tl.sum(tl.where(offs_a[:, None] == offs_c[None, :], sim, 0.0), axis=0)

    row_lse = row_max + tl.log(row_sum)
    col_lse = col_max + tl.log(col_sum)
    t = t_num / col_sum
    loss = (row_lse - (s * diag + b)) + alpha * (t + row_lse - col_lse)
    tl.store(col_loss_ptr + offs_c, loss / B, mask=c_ok)
    tl.store(row_lse_ptr + offs_c, row_lse, mask=c_ok)
    tl.store(col_lse_ptr + offs_c, col_lse, mask=c_ok)
    tl.store(t_ptr + offs_c, t, mask=c_ok)


@triton.jit
def _icd_bwd_kernel(
    zs_ptr,  # (B, D) student embeddings, bf16/fp32
    zt_ptr,  # (B, D) teacher embeddings, same dtype
    log_scale_ptr,  # () tau
    bias_ptr,  # () b
    row_lse_ptr,  # (B,) fp32 rowLSE from the forward
    col_lse_ptr,  # (B,) fp32 colLSE from the forward
    t_ptr,  # (B,) fp32 t from the forward
    grad_out_ptr,  # () fp32 dloss
    dz_ptr,  # (B, D) out, input dtype: dzs (TEACHER=False) or dzt (TEACHER=True)
    dlog_scale_part_ptr,  # (cdiv(B, BLOCK),) fp32 out: per-program dlog_scale (TEACHER=False only)
    B,
    D,
    alpha,
    max_scale,
    TEACHER: tl.constexpr,  # False: own rows a, stream columns c; True: own columns c, stream rows a
    BLOCK: tl.constexpr,  # batch tile side (own and streamed)
    BLOCK_K: tl.constexpr,  # D chunk of the similarity dots
    BLOCK_D: tl.constexpr,  # D chunk of the output owned by this program (grid axis 1)
    DOT_BF16: tl.constexpr,  # the similarity recompute's dots, as in the forward (see _use_bf16_dot)
):
    offs_own = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    own_ok = offs_own < B
    d_ok = offs_d < D
    s, dscale = _icd_scale(log_scale_ptr, max_scale)
    b = tl.load(bias_ptr).to(tl.float32)
    coef = tl.load(grad_out_ptr).to(tl.float32) / B

    acc = tl.zeros((BLOCK, BLOCK_D), dtype=tl.float32)
    g_dot_s = tl.zeros((BLOCK,), dtype=tl.float32)  # sum_c G_ac S_ac per own row a
    for o0 in range(0, B, BLOCK):
        offs_other = o0 + tl.arange(0, BLOCK)
        if TEACHER:
            offs_a = offs_other
            offs_c = offs_own
        else:
            offs_a = offs_own
            offs_c = offs_other
        a_ok = offs_a < B
        c_ok = offs_c < B
        sim, sim_t = _icd_sim_tiles(zs_ptr, zt_ptr, offs_a, offs_c, B, D, BLOCK, BLOCK, BLOCK_K, DOT_BF16)
        row_lse_a = tl.load(row_lse_ptr + offs_a, mask=a_ok, other=0.0)
        col_lse_a = tl.load(col_lse_ptr + offs_a, mask=a_ok, other=0.0)
        col_lse_c = tl.load(col_lse_ptr + offs_c, mask=c_ok, other=0.0)
        t_c = tl.load(t_ptr + offs_c, mask=c_ok, other=0.0)
        logits = s * sim + b
        r = tl.exp(logits - row_lse_a[:, None])  # R_ac
        w = tl.exp(logits - col_lse_c[None, :])  # W_ac
        w_t = tl.exp(s * sim_t + b - col_lse_a[:, None])  # W_ca
        eye = tl.where(offs_a[:, None] == offs_c[None, :], 1.0, 0.0)
        g = r - eye + alpha * (w * (s * (sim - sim_t) - t_c[None, :]) + r - w_t)
        g = tl.where(a_ok[:, None] & c_ok[None, :], coef * g, 0.0)  # padding contributes nothing
        # The output dot stays fp32 "ieee" even with DOT_BF16: g is a computed fp32 value, and a bf16
        # tensor-core dot would round it to 8 significant bits, a silent loss the similarity dots avoid.
        if TEACHER:
            zs_a = tl.load(zs_ptr + offs_a[:, None] * D + offs_d[None, :], mask=a_ok[:, None] & d_ok[None, :],
                           other=0.0).to(tl.float32)
            acc = tl.dot(tl.trans(g), zs_a, acc, input_precision="ieee")
        else:
            zt_c = tl.load(zt_ptr + offs_c[:, None] * D + offs_d[None, :], mask=c_ok[:, None] & d_ok[None, :],
                           other=0.0).to(tl.float32)
            acc = tl.dot(g, zt_c, acc, input_precision="ieee")
            g_dot_s += tl.sum(g * sim, axis=1)

    dz = s * acc
    tl.store(dz_ptr + offs_own[:, None] * D + offs_d[None, :], dz.to(dz_ptr.dtype.element_ty),
             mask=own_ok[:, None] & d_ok[None, :])
    if not TEACHER:
        # one partial per row block; only the first D chunk writes it (all chunks computed the same)
        tl.store(dlog_scale_part_ptr + tl.program_id(0), tl.sum(g_dot_s) * dscale, mask=tl.program_id(1) == 0)


# ----------------------------------------------------------------------------- host side


def _config(B: int, D: int) -> dict:
    """Tile sizes and launch options at (B, D), shared by the launchers and `build_specs`.

    fp32 FMA dots hold a thread's share of both operands for the whole BLOCK_K in registers, so K
    chunks stay small. Forward: 16 owned columns (B = 512 gives 32 programs) x 64 streamed rows, 8 warps.
    Backward: 16 x 16 tiles, 8 warps, and one program owns a whole row of the gradient up to
    D = 512 (beyond, grid axis 1 splits D and each chunk recomputes the tiles); above D = 128
    64-wide K chunks halve the loop trips. Checked with ptxas for sm_80/sm_90 (no spills) at
    D = 64, 100, 128, 512, 2048, bf16 and fp32. bf16 inputs compile the DOT_BF16 variant with the same
    tiles (mma.sync on sm_80; the forward uses wgmma on sm_90), also without spills.
    """
    p2 = max(16, triton.next_power_of_2(D))
    fwd = dict(BLOCK_M=min(64, max(16, triton.next_power_of_2(B))), BLOCK_N=16, BLOCK_K=min(32, p2),
               num_warps=8, num_stages=2)
    if p2 <= 128:
        bwd = dict(BLOCK=16, BLOCK_K=16, BLOCK_D=p2, num_warps=8, num_stages=2)
    else:
        bwd = dict(BLOCK=16, BLOCK_K=64, BLOCK_D=min(512, p2), num_warps=8, num_stages=2)
    return dict(fwd=fwd, bwd=bwd)


def _use_bf16_dot(dtype: torch.dtype, interpreted: bool) -> bool:
    """DOT_BF16: bf16 tensor-core similarity dots for bf16 inputs, except in the Triton interpreter.

    bf16 x bf16 products are exact in fp32, so on a GPU this computes the fp32 path's products at the
    tensor-core rate. The interpreter's bf16 tl.dot returns garbage, so there (TRITON_INTERPRET=1, how
    the tests run) bf16 inputs take the fp32 path, and the tests check those numerics.
    """
    return dtype == torch.bfloat16 and not interpreted


def _interpreted() -> bool:
    """True under TRITON_INTERPRET: set now (os.environ), or when the kernels were defined (@triton.jit
    then made interpreter functions, whatever the variable says later)."""
    return triton.knobs.runtime.interpret or not isinstance(_icd_fwd_kernel, triton.runtime.JITFunction)


def _forward(z_s, z_t, log_scale, bias, alpha, max_scale):
    B, D = z_s.shape
    cfg = _config(B, D)["fwd"]
    meta = dict(cfg, DOT_BF16=_use_bf16_dot(z_s.dtype, _interpreted()))
    num_warps, num_stages = meta.pop("num_warps"), meta.pop("num_stages")
    col_loss, row_lse, col_lse, t = (torch.empty((B,), dtype=torch.float32, device=z_s.device) for _ in range(4))
    grid = (triton.cdiv(B, meta["BLOCK_N"]),)
    _icd_fwd_kernel[grid](z_s, z_t, log_scale, bias, col_loss, row_lse, col_lse, t, B, D, alpha, max_scale,
                          **meta, num_warps=num_warps, num_stages=num_stages)
    return col_loss.sum(), row_lse, col_lse, t


def _backward(grad, z_s, z_t, log_scale, bias, row_lse, col_lse, t, alpha, max_scale, student, teacher):
    """dz_s and dlog_scale if `student`, dz_t if `teacher` (the others come back empty); dbias = 0."""
    B, D = z_s.shape
    meta = dict(_config(B, D)["bwd"], DOT_BF16=_use_bf16_dot(z_s.dtype, _interpreted()))  # as the forward
    num_warps, num_stages = meta.pop("num_warps"), meta.pop("num_stages")
    grid = (triton.cdiv(B, meta["BLOCK"]), triton.cdiv(D, meta["BLOCK_D"]))
    dlog_scale_part = torch.empty((grid[0],), dtype=torch.float32, device=z_s.device)
    grads = []
    for is_teacher, wanted in ((False, student), (True, teacher)):
        dz = torch.empty((B, D) if wanted else (0,), dtype=z_s.dtype, device=z_s.device)
        if wanted:
            _icd_bwd_kernel[grid](z_s, z_t, log_scale, bias, row_lse, col_lse, t, grad, dz, dlog_scale_part,
                                  B, D, alpha, max_scale, TEACHER=is_teacher, **meta,
                                  num_warps=num_warps, num_stages=num_stages)
        grads.append(dz)
    if student:
        dlog_scale = dlog_scale_part.sum().to(log_scale.dtype).reshape(log_scale.shape)
    else:
        dlog_scale = log_scale.new_empty(0)
    return grads[0], grads[1], dlog_scale, torch.zeros_like(bias)


# ----------------------------------------------------------------------------- autograd


@torch.library.custom_op("kernels::icd_loss", mutates_args=())
def _icd_loss_op(
    z_s: torch.Tensor, z_t: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor, alpha: float, max_scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, rowLSE, colLSE, t); the three B-vectors are what the backward keeps."""
    return _forward(z_s.contiguous(), z_t.contiguous(), log_scale, bias, alpha, max_scale)


@_icd_loss_op.register_fake
def _(z_s, z_t, log_scale, bias, alpha, max_scale):
    B = z_s.shape[0]
    return (z_s.new_empty((), dtype=torch.float32),
            *(z_s.new_empty((B,), dtype=torch.float32) for _ in range(3)))


@torch.library.custom_op("kernels::icd_loss_backward", mutates_args=())
def _icd_loss_backward_op(
    grad: torch.Tensor, z_s: torch.Tensor, z_t: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor,
    row_lse: torch.Tensor, col_lse: torch.Tensor, t: torch.Tensor, alpha: float, max_scale: float,
    student: bool, teacher: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(grad, z_s.contiguous(), z_t.contiguous(), log_scale, bias, row_lse, col_lse, t,
                     alpha, max_scale, student, teacher)


@_icd_loss_backward_op.register_fake
def _(grad, z_s, z_t, log_scale, bias, row_lse, col_lse, t, alpha, max_scale, student, teacher):
    def out(like, wanted):  # contiguous, as the real op returns (empty_like would keep a strided input's strides)
        return like.new_empty(like.shape) if wanted else like.new_empty(0)

    return out(z_s, student), out(z_t, teacher), out(log_scale, student), bias.new_empty(bias.shape)


def _setup_context(ctx, inputs, output):
    z_s, z_t, log_scale, bias, alpha, max_scale = inputs
    _, row_lse, col_lse, t = output
    ctx.save_for_backward(z_s, z_t, log_scale, bias, row_lse, col_lse, t)
    ctx.alpha, ctx.max_scale = alpha, max_scale
    ctx.mark_non_differentiable(row_lse, col_lse, t)


def _backward_autograd(ctx, grad, *_unused_vector_grads):
    z_s, z_t, log_scale, bias, row_lse, col_lse, t = ctx.saved_tensors
    need = ctx.needs_input_grad[:4]
    grads = _icd_loss_backward_op(grad, z_s, z_t, log_scale, bias, row_lse, col_lse, t, ctx.alpha, ctx.max_scale,
                                  student=need[0] or need[2], teacher=need[1])  # skip launches nobody needs
    return *(g if n else None for g, n in zip(grads, need)), None, None


_icd_loss_op.register_autograd(_backward_autograd, setup_context=_setup_context)


def icd_loss(
    z_s: torch.Tensor,
    z_t: torch.Tensor,
    log_scale: torch.Tensor,
    bias: torch.Tensor,
    alpha: float = 0.5,
    max_scale: float = 10.0,
) -> torch.Tensor:
    """Fused twin of `kernels.reference.icd_loss`: (B, D) z_s, z_t; 0-dim log_scale, bias; fp32 0-dim loss."""
    assert z_s.ndim == 2 and z_s.shape == z_t.shape and z_s.dtype == z_t.dtype, (z_s.shape, z_t.shape)
    return _icd_loss_op(z_s, z_t, log_scale, bias, float(alpha), float(max_scale))[0]


# ----------------------------------------------------------------------------- build specs


def _dtype(dtype) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, dtype)


def build_specs(B: int = 512, D: int = 128, dtype: torch.dtype = torch.bfloat16) -> list[KernelSpec]:
    """The forward and both backward launches exactly as production configures them on a GPU at
    (B, D, dtype): DOT_BF16 for bf16 inputs (never the interpreter's choice, so the spec is the same
    whether or not TRITON_INTERPRET is set where it is built)."""
    dtype = _dtype(dtype)
    cfg = _config(B, D)
    dot_bf16 = _use_bf16_dot(dtype, interpreted=False)
    sim_precision = "bf16" if dot_bf16 else "ieee_fp32"
    elt = torch.empty((), dtype=dtype).element_size()
    z, f32 = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}[dtype], "*fp32"
    fwd = dict(cfg["fwd"], DOT_BF16=dot_bf16)
    fwd_warps, fwd_stages = fwd.pop("num_warps"), fwd.pop("num_stages")
    bwd = dict(cfg["bwd"], DOT_BF16=dot_bf16)
    bwd_warps, bwd_stages = bwd.pop("num_warps"), bwd.pop("num_stages")
    specs = [
        KernelSpec(
            name="icd.forward",
            fn=_icd_fwd_kernel,
            signature={"zs_ptr": z, "zt_ptr": z, "log_scale_ptr": f32, "bias_ptr": f32, "col_loss_ptr": f32,
                       "row_lse_ptr": f32, "col_lse_ptr": f32, "t_ptr": f32, "B": "i32", "D": "i32",
                       "alpha": "fp32", "max_scale": "fp32",
                       "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
                       "DOT_BF16": "constexpr"},
            constexprs=fwd,
            num_warps=fwd_warps,
            num_stages=fwd_stages,
            grid=(triton.cdiv(B, fwd["BLOCK_N"]),),
            bytes_moved=2 * B * D * elt + 8 + 4 * B * 4,
            flops=2 * (2 * B * B * D) + 20 * B * B,  # two similarity dots per tile + ~20 flops/entry
            dot_flops={sim_precision: 2 * (2 * B * B * D)},
        )
    ]
    grid = (triton.cdiv(B, bwd["BLOCK"]), triton.cdiv(D, bwd["BLOCK_D"]))
    for teacher in (False, True):
        specs.append(KernelSpec(
            name=f"icd.backward_{'teacher' if teacher else 'student'}",
            fn=_icd_bwd_kernel,
            signature={"zs_ptr": z, "zt_ptr": z, "log_scale_ptr": f32, "bias_ptr": f32, "row_lse_ptr": f32,
                       "col_lse_ptr": f32, "t_ptr": f32, "grad_out_ptr": f32, "dz_ptr": z,
                       "dlog_scale_part_ptr": f32, "B": "i32", "D": "i32", "alpha": "fp32", "max_scale": "fp32",
                       "TEACHER": "constexpr", "BLOCK": "constexpr", "BLOCK_K": "constexpr",
                       "BLOCK_D": "constexpr", "DOT_BF16": "constexpr"},
            constexprs={"TEACHER": teacher, **bwd},
            num_warps=bwd_warps,
            num_stages=bwd_stages,
            grid=grid,
            bytes_moved=3 * B * D * elt + 3 * B * 4 + 12 + 4 * grid[0],
            # per D chunk: two similarity dots + ~25 flops/entry for G; plus the output dot
            flops=grid[1] * (2 * (2 * B * B * D) + 25 * B * B) + 2 * B * B * D,
            # the similarity recompute at DOT_BF16's precision; the output dot (computed G) stays fp32 ieee
            dot_flops={sim_precision: grid[1] * 2 * (2 * B * B * D), "ieee_fp32": 2 * B * B * D}
            if dot_bf16 else {"ieee_fp32": grid[1] * 2 * (2 * B * B * D) + 2 * B * B * D},
        ))
    return specs
