"""CCD (channel contrastive distillation, papers/dccd-*.md eq. 3-5), one half of DCCD.

c_s = Norm(M_s(f_s)), c_t = Norm(f_t), M_s = Linear(d_s->d_t)-BN-ReLU-Linear(d_t->d_t) (the teacher
gets no transform); Norm standardises each channel over the batch inside `kernels.ccd_loss`.
ccd = L_eye(c_s[view a], c_t[view b]) + L_eye(c_s[view b], c_t[view a]), weight beta = 25.6 / d_t
unless `ccd.weight` is set (the paper's 0.4 / 0.2 / 0.1 for d_t = 64 / 128 / 256).

M_s runs once on the 2B batch (both views), so its BatchNorm sees both views' statistics. In-batch: the
correlations and the standardisation are over this process's batch (train.batch_size), not gathered.
"""
from torch import nn

import kernels
from pipeline.methods.base import Method, MethodContext, TeacherNeeds, register


@register("ccd")
class CCD(Method):
    views = 2

    @classmethod
    def teacher_needs(cls, cfg):
        return TeacherNeeds(features=("ccd",))

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        c = ctx.cfg.ccd
        d_s, d_t = ctx.student_dim, ctx.teacher_dim
        self.weight = c.weight or 25.6 / d_t
        self.theta, self.eps = c.theta, c.eps
        self.transform = nn.Sequential(nn.Linear(d_s, d_t), nn.BatchNorm1d(d_t), nn.ReLU(inplace=True),
                                       nn.Linear(d_t, d_t))

    def forward(self, out):
        s_a, s_b = out.per_view(self.transform(out.student.features))
        t_a, t_b = out.per_view(out.teacher.features)
        ccd = (kernels.ccd_loss(s_a, t_b, self.theta, self.eps)
               + kernels.ccd_loss(s_b, t_a, self.theta, self.eps))
        return {"ccd": self.weight * ccd}
