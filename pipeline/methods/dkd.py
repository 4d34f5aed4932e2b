"""Difference KD (DCCD's DKD, papers/dccd-*.md eq. 6-7; not "decoupled KD"): KD on the logit
differences between two views of each image, in both directions.

d = y[view a] - y[view b] per network;
dkd = T^2/2 * mean_i [KL(softmax(d_t/T) || softmax(d_s/T)) + KL(softmax(-d_t/T) || softmax(-d_s/T))].

From a teacher cache with K < classes the term is approximate: it uses the logits themselves (their
differences between views), and a cache keeps only each view's top K and its tail's mass (spread evenly
over the other classes). With K = classes it is exact up to the fp16 rounding of the stored logits.
"""
import kernels
from pipeline.methods.base import Method, MethodContext, TeacherNeeds, register


@register("dkd")
class DifferenceKD(Method):
    views = 2

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.weight = ctx.cfg.dkd.weight
        self.temperature = ctx.cfg.dkd.temperature

    @classmethod
    def teacher_needs(cls, cfg):
        return TeacherNeeds(temperatures={"dkd.temperature": cfg.dkd.temperature},
                            approximate_below_all_classes=("dkd",))

    def forward(self, out):
        s_a, s_b = out.per_view(out.student.logits)
        t_a, t_b = out.per_view(out.teacher.logits_at(self.temperature))
        return {"dkd": self.weight * kernels.dkd_loss(s_a, s_b, t_a, t_b, self.temperature)}
