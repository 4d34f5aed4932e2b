"""The method notes' losses written out independently in float64 with explicit loops: the expected
values of the method tests (tests/methods/*) and of the reference check (test_losses.py).

Nothing here calls kernels/ or pipeline/: a bug there cannot leak into an expected value.
"""
import torch


def softmax(x: torch.Tensor) -> torch.Tensor:
    e = (x - x.max()).exp()
    return e / e.sum()


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum()


def kd_formula(s, t, temperature):
    """T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T)), one row at a time."""
    rows = [kl(softmax(t[i] / temperature), softmax(s[i] / temperature)) for i in range(s.shape[0])]
    return temperature**2 * torch.stack(rows).mean()


def dkd_formula(s_a, s_b, t_a, t_b, temperature):
    """T^2 / 2 * mean_i [KL(softmax(d_t/T) || softmax(d_s/T)) + KL(softmax(-d_t/T) || softmax(-d_s/T))]."""
    d_s, d_t = s_a - s_b, t_a - t_b
    rows = [kl(softmax(d_t[i] / temperature), softmax(d_s[i] / temperature))
            + kl(softmax(-d_t[i] / temperature), softmax(-d_s[i] / temperature)) for i in range(d_s.shape[0])]
    return temperature**2 / 2 * torch.stack(rows).mean()


def icd_formula(z_s, z_t, log_scale, bias, alpha=0.5, max_scale=10.0):
    """contrast = mean_i -log softmax_j(L_ij)[i]; invariance = mean_i KL(softmax_j L_ji || softmax_j L_ij)."""
    scale = torch.minimum(log_scale.exp(), torch.tensor(max_scale, dtype=log_scale.dtype))
    logits = torch.einsum("id,jd->ij", z_s, z_t) * scale + bias
    n = logits.shape[0]
    contrast = torch.stack([-softmax(logits[i])[i].log() for i in range(n)]).mean()
    invariance = torch.stack([kl(softmax(logits[:, i]), softmax(logits[i])) for i in range(n)]).mean()
    return contrast + alpha * invariance


def ccd_formula(f_s, f_t, theta=2.0, eps=1e-5):
    """L_eye of the DCCD paper (eq. 3-4) on channel-standardised features, double loop over channels."""
    def norm(x):
        return (x - x.mean(0)) / (x.var(0, unbiased=False) + eps).sqrt()
    c_s, c_t = norm(f_s), norm(f_t)
    batch, dim = c_s.shape
    corr = torch.einsum("bi,bj->ij", c_s, c_t) / batch
    on = sum((1 - corr[i, i]) ** 2 for i in range(dim))
    off = sum(corr[i, j] ** 2 for i in range(dim) for j in range(dim) if i != j)
    return on + theta / (dim - 1) * off
