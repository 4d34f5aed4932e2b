"""Difference KD (DCCD's DKD, papers/dccd-*.md eq. 6-7; not "decoupled KD"): KD on the logit
differences between two views of each image, in both directions.

d = y[view a] - y[view b] per network;
dkd = T^2/2 * mean_i [KL(softmax(d_t/T) || softmax(d_s/T)) + KL(softmax(-d_t/T) || softmax(-d_s/T))].
"""
import kernels
from pipeline.methods.base import Method, MethodContext, register


@register("dkd")
class DifferenceKD(Method):
    views = 2

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.weight = ctx.cfg.dkd.weight
        self.temperature = ctx.cfg.dkd.temperature

    def forward(self, out):
        s_a, s_b = out.per_view(out.student.logits)
        t_a, t_b = out.per_view(out.teacher.logits)
        return {"dkd": self.weight * kernels.dkd_loss(s_a, s_b, t_a, t_b, self.temperature)}
