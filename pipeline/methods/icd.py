"""ICD (Invariant Consistency Distillation, papers/icd-*.md eq. 8-13, official-code semantics).

z = normalize(Linear(f) -> 128) for student and teacher; L = z_s @ z_t^T * min(exp(tau), 10) + b
(rows = students, columns = teachers); icd = CE(L, arange(B)) + alpha * KL(softmax(L^T) || softmax(L)),
weighted by beta. tau and b are trainable and kept out of weight decay (b's gradient is exactly 0:
it cancels in every softmax; kept as in the paper and the official code).

Two views (when combined with a two-view method such as dkd or ccd): the loss is applied to each
view on its own and averaged, so each row still contrasts one image against the same view's batch.

In-batch: by default the negatives are the other images of this process's batch (train.batch_size per
process, as the official code has them). `icd.negatives: global` (an extension, off by default): the embeddings of every process are gathered
(differentiably) and every process computes the same loss on the global W*B x W*B matrix, i.e.
exactly single-device ICD on the global batch. Students are gathered along with the teachers because
the invariance term normalises each column over all students. The gather's backward sums the
processes' gradients and DDP averages them, so the parameters get exactly d(global loss)/d(theta).
"""
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from pipeline.methods.base import Method, MethodContext, TeacherNeeds, register
from pipeline.methods.distributed import gather_rows_with_grad


@register("icd")
class ICD(Method):

    @classmethod
    def teacher_needs(cls, cfg):
        return TeacherNeeds(features=("icd",))
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        c = ctx.cfg.icd
        self.weight, self.alpha, self.max_scale = c.weight, c.alpha, c.max_scale
        self.global_negatives = c.negatives == "global"
        self.head_s = nn.Linear(ctx.student_dim, c.dim)
        self.head_t = nn.Linear(ctx.teacher_dim, c.dim)
        self.log_scale = nn.Parameter(torch.tensor(float(c.init_log_scale)))  # tau
        self.bias = nn.Parameter(torch.tensor(float(c.init_bias)))  # b

    def embed(self, head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(head(features).float(), dim=1)

    def forward(self, out):
        z_s = self.embed(self.head_s, out.student.features)
        z_t = self.embed(self.head_t, out.teacher.features.detach())  # the teacher backbone is frozen
        losses = []
        for view_s, view_t in zip(out.per_view(z_s), out.per_view(z_t)):
            if self.global_negatives:
                view_s, view_t = gather_rows_with_grad(view_s), gather_rows_with_grad(view_t)
            losses.append(kernels.icd_loss(view_s, view_t, self.log_scale, self.bias, self.alpha, self.max_scale))
        return {"icd": self.weight * torch.stack(losses).mean()}
