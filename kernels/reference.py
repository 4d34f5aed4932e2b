"""Plain PyTorch losses: the definition of correct for every fused kernel in this package.

Each function works in float32 or float64 (lower-precision inputs are computed in float32) and
returns a 0-dim tensor, the batch mean. Formulas: `../shared/method-notes.md` and the papers.
"""
import torch
import torch.nn.functional as F


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T)). s, t: (B, C)."""
    dtype = _compute_dtype(s_logits, t_logits)
    log_p_s = F.log_softmax(s_logits.to(dtype) / temperature, dim=1)
    log_p_t = F.log_softmax(t_logits.to(dtype) / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * temperature**2


def dkd_loss(
    s_logits_a: torch.Tensor,
    s_logits_b: torch.Tensor,
    t_logits_a: torch.Tensor,
    t_logits_b: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Difference KD (DCCD): KD on the logit differences between two views, both directions.

    d = y[view a] - y[view b] per network;
    T^2/2 * mean_i [KL(softmax(d_t/T) || softmax(d_s/T)) + KL(softmax(-d_t/T) || softmax(-d_s/T))].
    """
    d_s = s_logits_a - s_logits_b
    d_t = t_logits_a - t_logits_b
    return 0.5 * (kd_loss(d_s, d_t, temperature) + kd_loss(-d_s, -d_t, temperature))


def icd_loss(
    z_s: torch.Tensor,
    z_t: torch.Tensor,
    log_scale: torch.Tensor,
    bias: torch.Tensor,
    alpha: float = 0.5,
    max_scale: float = 10.0,
) -> torch.Tensor:
    """ICD: in-batch contrastive CE over student rows + alpha * invariance KL.

    z_s, z_t: (B, D) L2-normalised embeddings (row i of each is the same image).
    L = (z_s @ z_t.T) * min(exp(log_scale), max_scale) + bias, rows = students, columns = teachers.
    contrast = CE(L, arange(B)); invariance = mean_i KL(softmax(L.T)_i || softmax(L)_i).
    `bias` cancels in every softmax, so its gradient is exactly zero (kept: paper and official code).
    """
    dtype = _compute_dtype(z_s, z_t)
    scale = log_scale.to(dtype).exp().clamp(max=max_scale)
    logits = z_s.to(dtype) @ z_t.to(dtype).T * scale + bias.to(dtype)
    targets = torch.arange(logits.shape[0], device=logits.device)
    contrast = F.cross_entropy(logits, targets)
    log_p_rows = F.log_softmax(logits, dim=1)
    log_p_cols = F.log_softmax(logits, dim=0).T  # row i: column i of L, normalised over students
    invariance = (log_p_cols.exp() * (log_p_cols - log_p_rows)).sum(dim=1).mean()
    return contrast + alpha * invariance


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel standardisation over the batch, as BatchNorm without affine (biased variance)."""
    mean = x.mean(dim=0, keepdim=True)
    var = (x - mean).square().mean(dim=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def ccd_loss(f_s: torch.Tensor, f_t: torch.Tensor, theta: float = 2.0, eps: float = 1e-5) -> torch.Tensor:
    """CCD's L_eye between (B, d) student and teacher features (one direction, one view pair).

    Corr = Norm(f_s).T @ Norm(f_t) / B;
    sum_i (1 - Corr_ii)^2 + theta / (d - 1) * sum_{i != j} Corr_ij^2 (no off-diagonal term when d = 1).
    """
    dtype = _compute_dtype(f_s, f_t)
    batch, dim = f_s.shape
    c_s = standardize(f_s.to(dtype), eps)
    c_t = standardize(f_t.to(dtype), eps)
    corr = c_s.T @ c_t / batch
    diag = torch.diagonal(corr)
    on_diag = (1 - diag).square().sum()
    if dim == 1:
        return on_diag
    off_diag = corr.square().sum() - diag.square().sum()
    return on_diag + theta / (dim - 1) * off_diag
