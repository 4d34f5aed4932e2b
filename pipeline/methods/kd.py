"""Hinton KD: T^2 * KL(softmax(y_t/T) || softmax(y_s/T)), averaged over the batch (and both views)."""
import kernels
from pipeline.methods.base import Method, MethodContext, TeacherNeeds, register


@register("kd")
class KD(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.weight = ctx.cfg.kd.weight
        self.temperature = ctx.cfg.kd.temperature

    @classmethod
    def teacher_needs(cls, cfg):
        return TeacherNeeds(temperatures={"kd.temperature": cfg.kd.temperature})

    def forward(self, out):
        y_t = out.teacher.logits_at(self.temperature)
        return {"kd": self.weight * kernels.kd_loss(out.student.logits, y_t, self.temperature)}
