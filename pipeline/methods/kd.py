"""Hinton KD: T^2 * KL(softmax(y_t/T) || softmax(y_s/T)), averaged over the batch (and both views)."""
import kernels
from pipeline.methods.base import Method, MethodContext, register


@register("kd")
class KD(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.weight = ctx.cfg.kd.weight
        self.temperature = ctx.cfg.kd.temperature

    def forward(self, out):
        return {"kd": self.weight * kernels.kd_loss(out.student.logits, out.teacher.logits, self.temperature)}
