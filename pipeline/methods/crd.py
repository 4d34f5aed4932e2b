"""CRD (Tian et al., Contrastive Representation Distillation), following the official RepDistiller code.

Embeddings v = normalize(Linear(f) -> 128) for student and teacher. Memory banks (N x 128 buffers,
one per network, initialised uniform in [-stdv, stdv], stdv = 1 / sqrt(128 / 3)) hold a momentum
average (0.5) of each sample's embedding. Every sample is contrasted with K = 16384 bank rows drawn
uniformly with replacement (the official AliasMethod with uniform weights), its own row first:
  student v_s against the teacher bank, teacher v_t against the student bank,
  P = exp(bank_row . v / T) / Z, T = 0.07; NCE loss with noise distribution Pn = 1/N (ContrastLoss):
  -(1/B) sum_i [log(P_i0 / (P_i0 + K Pn)) + sum_k log(K Pn / (P_ik + K Pn))], summed over both directions.
Z (per direction) is estimated on the first batch as mean(exp(.)) * N and then fixed; it is a buffer,
so a resumed run keeps it. Sampling with replacement also covers K >= N (tiny demos), as the official
code does. The batch's dataset indices come from `out.index`; with two views (combined with a
two-view method) CRD uses view a.

Processes: every process gathers the indices and new embeddings of all processes and applies the
same bank update, so the banks stay identical without being broadcast (DDP broadcast_buffers is off);
Z's estimate is the mean over all processes. Negatives are drawn for all processes from the shared
RNG stream and each takes its own slice, so processes contrast against different negatives.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods.base import Method, MethodContext, register
from pipeline.methods.distributed import gather_rows, rank_and_world

NCE_EPS = 1e-7  # the official ContrastLoss's eps


def nce_loss(p: torch.Tensor, num_data: int) -> torch.Tensor:
    """p: (B, K + 1) normalised scores, positive in column 0 -> the NCE loss of the official ContrastLoss."""
    m_pn = (p.shape[1] - 1) / num_data  # K * Pn
    log_d1 = torch.log(p[:, 0] / (p[:, 0] + m_pn + NCE_EPS))
    log_d0 = torch.log(m_pn / (p[:, 1:] + m_pn + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


@register("crd")
class CRD(Method):
    needs_index = True

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        c = ctx.cfg.crd
        self.weight, self.num_negatives, self.temperature, self.momentum = c.weight, c.nce_k, c.nce_t, c.momentum
        self.num_data = ctx.num_train_samples
        self.embed_s = nn.Linear(ctx.student_dim, c.dim)
        self.embed_t = nn.Linear(ctx.teacher_dim, c.dim)
        stdv = 1.0 / math.sqrt(c.dim / 3)
        self.register_buffer("bank_s", torch.rand(self.num_data, c.dim) * 2 * stdv - stdv)
        self.register_buffer("bank_t", torch.rand(self.num_data, c.dim) * 2 * stdv - stdv)
        self.register_buffer("z", torch.full((2,), -1.0))  # (student, teacher) direction; < 0: not yet set

    def sample_contrast(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) dataset indices -> (B, K + 1) bank rows: the sample itself, then K uniform draws."""
        rank, world = rank_and_world()
        draws = torch.randint(self.num_data, (world, index.shape[0], self.num_negatives + 1), device=index.device)
        contrast = draws[rank]
        contrast[:, 0] = index
        return contrast

    def scores(self, v: torch.Tensor, bank: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """exp(bank[contrast] . v / T): (B, K + 1), before the division by Z."""
        rows = bank[contrast]  # (B, K + 1, dim), a copy: the bank update below does not touch it
        return torch.exp(torch.einsum("bkd,bd->bk", rows, v) / self.temperature)

    @torch.no_grad()
    def update_banks(self, index: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor):
        """Momentum update of the rows `index` (all processes' samples, so every process does the same)."""
        for bank, v in ((self.bank_s, v_s), (self.bank_t, v_t)):
            mixed = bank[index] * self.momentum + v * (1 - self.momentum)
            bank.index_copy_(0, index, F.normalize(mixed, dim=1))

    def forward(self, out):
        index = out.index
        batch = index.shape[0]
        with torch.autocast(out.images.device.type, enabled=False):  # exp(x / 0.07) needs float32
            v_s = F.normalize(self.embed_s(out.student.features[:batch].float()), dim=1)
            v_t = F.normalize(self.embed_t(out.teacher.features[:batch].float()), dim=1)
            contrast = self.sample_contrast(index)
            e_s = self.scores(v_s, self.bank_t, contrast)  # student embedding vs teacher bank
            e_t = self.scores(v_t, self.bank_s, contrast)  # teacher embedding vs student bank
            with torch.no_grad():
                estimate = torch.stack([e_s.mean(), e_t.mean()]) * self.num_data
                estimate = gather_rows(estimate[None]).mean(dim=0)
                self.z.copy_(torch.where(self.z < 0, estimate, self.z))
                self.update_banks(gather_rows(index), gather_rows(v_s), gather_rows(v_t))
            loss = nce_loss(e_s / self.z[0], self.num_data) + nce_loss(e_t / self.z[1], self.num_data)
        return {"crd": self.weight * loss}
