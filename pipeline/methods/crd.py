"""CRD (Tian et al., Contrastive Representation Distillation), following the official RepDistiller code.

Embeddings v = normalize(Linear(f) -> 128) for student and teacher. Memory banks (N x 128 buffers,
one per network, initialised uniform in [-stdv, stdv], stdv = 1 / sqrt(128 / 3)) hold a momentum
average (0.5) of each sample's embedding. Every sample is contrasted with its own bank row and K = 16384
negatives, drawn with replacement from the samples of the OTHER classes, as the official ImageNet
training draws them (its dataset sampler: `np.random.choice(cls_negative[target], K, replace=True)`):
  student v_s against the teacher bank, teacher v_t against the student bank,
  P = exp(bank_row . v / T) / Z, T = 0.07; NCE loss with noise distribution Pn = 1/N (ContrastLoss):
  -(1/B) sum_i [log(P_i0 / (P_i0 + K Pn)) + sum_k log(K Pn / (P_ik + K Pn))], summed over both directions.
Z (per direction) is estimated on the first batch as mean(exp(.)) * N and then fixed; it is a buffer,
so a resumed run keeps it. Sampling with replacement also covers K >= N (tiny demos), as the official
code does. The batch's dataset indices come from `out.index`; with two views (combined with a
two-view method) CRD uses view a. The class of every train sample comes from the loader
(`MethodContext.sample_labels`); the sampler draws, on the device and without a host sync, uniform
positions among the N - n_c samples outside the anchor's class c in a class-sorted index.

Deviation, `crd.shared_negatives: true` (default false): one draw of K negatives per batch, uniform over
all N samples with replacement, shared by every anchor, so the scores are one (B x 128) @ (128 x K)
product per direction instead of gathering B x K x 128 bank rows; each anchor's negatives of its own
class are masked out of its NCE sum (about K / C of them) and out of Z's estimate, while K Pn keeps the
nominal K. Anchors of one batch then share their negatives (correlated within the batch, unlike the
official independent draws). Bank updates are unchanged.

Processes: every process gathers the indices and new embeddings of all processes and applies the
same bank update, so the banks stay identical without being broadcast (DDP broadcast_buffers is off);
Z's estimate pools the scores of all processes (sums and counts gathered), so two processes give the Z
of one process on their concatenated batch. Each process draws only its own B x K negatives (K in the
shared mode), from its own counter-based stream (pipeline/methods/draws.py: seed, process, the `draws`
counter buffer): different on every process, the same after a resume.

A skipped step (a non-finite gradient, pipeline/nonfinite.py) leaves the banks as they were: the forward
keeps the rows it overwrote (W x B rows, not the N x 128 banks) and `restore_if_skipped` writes them back
where the step's flag is set; Z and the draw counter are small buffers the trainer restores itself.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods.base import Method, MethodContext, TeacherNeeds, register
from pipeline.methods.distributed import gather_rows, rank_and_world
from pipeline.methods.draws import random_below

NCE_EPS = 1e-7  # the official ContrastLoss's eps


def nce_loss(p: torch.Tensor, num_data: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """p: (B, K + 1) normalised scores, positive in column 0 -> the NCE loss of the official ContrastLoss.
    keep: (B, K) bool, the negatives that count (None: all); K Pn keeps the nominal K either way."""
    m_pn = (p.shape[1] - 1) / num_data  # K * Pn
    log_d1 = torch.log(p[:, 0] / (p[:, 0] + m_pn + NCE_EPS))
    log_d0 = torch.log(m_pn / (p[:, 1:] + m_pn + NCE_EPS))
    if keep is not None:
        log_d0 = torch.where(keep, log_d0, 0.0)
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


@register("crd")
class CRD(Method):
    needs_index = True
    large_buffers = ("bank_s", "bank_t")

    @classmethod
    def teacher_needs(cls, cfg):
        return TeacherNeeds(features=("crd",))

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        c = ctx.cfg.crd
        self.weight, self.num_negatives, self.temperature, self.momentum = c.weight, c.nce_k, c.nce_t, c.momentum
        self.shared_negatives = c.shared_negatives
        self.num_data = ctx.num_train_samples
        self.embed_s = nn.Linear(ctx.student_dim, c.dim)
        self.embed_t = nn.Linear(ctx.teacher_dim, c.dim)
        stdv = 1.0 / math.sqrt(c.dim / 3)
        self.register_buffer("bank_s", torch.rand(self.num_data, c.dim) * 2 * stdv - stdv)
        self.register_buffer("bank_t", torch.rand(self.num_data, c.dim) * 2 * stdv - stdv)
        self.register_buffer("z", torch.full((2,), -1.0))  # (student, teacher) direction; < 0: not yet set
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))  # steps drawn so far: the stream's counter
        self.seed = ctx.cfg.train.seed
        self.touched: tuple[torch.Tensor, ...] | None = None  # (rows, their old bank_s, bank_t) of the last step
        self.register_class_index(ctx)

    def register_class_index(self, ctx: MethodContext):
        """Non-persistent buffers (rebuilt from the data, not checkpointed): class_of (N,) the class of each
        sample; by_class (N,) sample indices sorted by class; class_start / class_count (C,) each class's
        slice of by_class."""
        if ctx.sample_labels is None:
            raise ValueError("crd needs the class of every train sample (MethodContext.sample_labels)")
        labels = torch.as_tensor(ctx.sample_labels(), dtype=torch.int64).flatten()
        if labels.numel() != self.num_data:
            raise ValueError(f"crd: {labels.numel()} sample labels for {self.num_data} train samples")
        counts = torch.bincount(labels, minlength=ctx.num_classes)
        if int(counts.max()) == self.num_data:
            raise ValueError("crd draws negatives from other classes, but every train sample is in one class")
        self.register_buffer("class_of", labels, persistent=False)
        self.register_buffer("by_class", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)

    def random_below(self, high: torch.Tensor | int, shape: tuple[int, ...]) -> torch.Tensor:
        """This process's draws for this step (see pipeline/methods/draws.py); the forward then advances
        the counter."""
        return random_below(high, shape, self.seed, rank_and_world()[0], self.draws)

    def sample_contrast(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) dataset indices -> (B, K + 1) bank rows: the sample itself, then K draws with replacement
        from the samples of other classes (uniform over them)."""
        cls = self.class_of[index]
        start, count = self.class_start[cls][:, None], self.class_count[cls][:, None]
        # among the other classes' samples, in class-sorted order, then skip the anchor's own class slice
        position = self.random_below(self.num_data - count, (index.shape[0], self.num_negatives))
        position = position + (position >= start) * count
        return torch.cat([index[:, None], self.by_class[position]], dim=1)

    def sample_shared(self, device: torch.device) -> torch.Tensor:
        """(K,) negatives for this process's batch, uniform over all samples with replacement."""
        return self.random_below(self.num_data, (self.num_negatives,))

    def scores(self, v: torch.Tensor, bank: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """exp(bank[contrast] . v / T): (B, K + 1), before the division by Z."""
        rows = bank[contrast]  # (B, K + 1, dim), a copy: the bank update below does not touch it
        return torch.exp(torch.einsum("bkd,bd->bk", rows, v) / self.temperature)

    def shared_scores(self, v: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                      negatives: torch.Tensor) -> torch.Tensor:
        """exp([bank[index_b] . v_b, bank[negatives] . v_b] / T): (B, K + 1), one matrix product."""
        positive = (bank[index] * v).sum(dim=1, keepdim=True)
        return torch.exp(torch.cat([positive, v @ bank[negatives].T], dim=1) / self.temperature)

    @torch.no_grad()
    def update_banks(self, index: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor):
        """Momentum update of the rows `index` (all processes' samples, so every process does the same),
        keeping their old values for `restore_if_skipped`."""
        old = []
        for bank, v in ((self.bank_s, v_s), (self.bank_t, v_t)):
            rows = bank[index]
            old.append(rows)
            bank.index_copy_(0, index, F.normalize(rows * self.momentum + v * (1 - self.momentum), dim=1))
        self.touched = (index, *old)

    @torch.no_grad()
    def restore_if_skipped(self, skipped: torch.Tensor):
        if self.touched is None:
            return
        index, *old = self.touched
        for bank, rows in zip((self.bank_s, self.bank_t), old):
            bank.index_copy_(0, index, torch.where(skipped, rows, bank[index]))
        self.touched = None

    def forward(self, out):
        index = out.index
        batch = index.shape[0]
        with torch.autocast(out.images.device.type, enabled=False):  # exp(x / 0.07) needs float32
            v_s = F.normalize(self.embed_s(out.student.features[:batch].float()), dim=1)
            v_t = F.normalize(self.embed_t(out.teacher.features[:batch].float()), dim=1)
            keep = None
            if self.shared_negatives:
                negatives = self.sample_shared(index.device)
                keep = self.class_of[negatives][None, :] != self.class_of[index][:, None]  # (B, K)
                e_s = self.shared_scores(v_s, self.bank_t, index, negatives)  # student vs teacher bank
                e_t = self.shared_scores(v_t, self.bank_s, index, negatives)  # teacher vs student bank
            else:
                contrast = self.sample_contrast(index)
                e_s = self.scores(v_s, self.bank_t, contrast)  # student embedding vs teacher bank
                e_t = self.scores(v_t, self.bank_s, contrast)  # teacher embedding vs student bank
            with torch.no_grad():
                # Z := mean of every process's counted scores x N on the first step (sums and counts pooled)
                sums = gather_rows(torch.stack([*self.score_sum(e_s, keep), *self.score_sum(e_t, keep)])[None])
                sums = sums.sum(dim=0)
                estimate = torch.stack([sums[0] / sums[1], sums[2] / sums[3]]) * self.num_data
                self.z.copy_(torch.where(self.z < 0, estimate, self.z))
                self.draws.add_(1)
                self.update_banks(gather_rows(index), gather_rows(v_s), gather_rows(v_t))
            loss = nce_loss(e_s / self.z[0], self.num_data, keep) + nce_loss(e_t / self.z[1], self.num_data, keep)
        return {"crd": self.weight * loss}

    @staticmethod
    def score_sum(e: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, count) of the scores that enter the loss: positives and kept negatives."""
        if keep is None:
            return e.sum(), e.new_full((), e.numel())  # a fill on the device (torch.tensor would copy from the host)
        return e[:, 0].sum() + torch.where(keep, e[:, 1:], 0.0).sum(), (keep.sum() + e.shape[0]).to(e.dtype)
