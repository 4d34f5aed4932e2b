"""SLKD (self-learning teachers, papers/slkd-*.md eq. 1-7).

Two self-learning teachers SL1, SL2 (the teacher's architecture, random inits from distinct seeds)
train in the same run, inside this module: so they share the student's optimizer settings and
schedule, are wrapped by DDP with the student and are checkpointed with it. Each learns from the
frozen teacher: sl_k = alpha * CE(y_SLk) + (1 - alpha) * KD(teacher -> SLk) (eq. 4-5).
The student learns from the teacher and from the fused y_sl = rho * y_SL1 + (1 - rho) * y_SL2 (eq. 6):
  lambda * (alpha * CE + (1 - alpha) * KD(t -> s)) + eta * (alpha * CE + (1 - alpha) * KD(sl -> s))  (eq. 7)
The two CE terms fold into one of weight (lambda + eta) * alpha, which replaces train.ce_weight.
y_sl is detached by default (eq. 3 optimises the student only); `slkd.detach: false` lets the
student's loss train the SL teachers too, as the public code does.

Cost: two extra teacher-sized networks run forward and backward every step.
"""
import logging

import torch
import torch.nn.functional as F

import kernels
from pipeline.methods.base import Method, MethodContext, TeacherNeeds, register

log = logging.getLogger(__name__)


def build_seeded(build, seed: int):
    """A network from `build()` initialised from `seed`, leaving the global RNG stream untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


@register("slkd")
class SLKD(Method):
    ce_weight = 0.4  # (lambda + eta) * alpha at the defaults; the instance computes it from the config

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        c = ctx.cfg.slkd
        self.alpha, self.temperature, self.rho, self.detach = c.alpha, c.temperature, c.rho, c.detach
        self.teacher_weight = c.lam * (1 - c.alpha)
        self.sl_weight = c.eta * (1 - c.alpha)
        self.ce_weight = (c.lam + c.eta) * c.alpha
        seed = ctx.cfg.train.seed
        self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed)
        self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed)
        log.warning("slkd trains two extra %s-sized self-learning teachers every step (forward and backward): "
                    "expect roughly the cost of training the teacher twice on top of the student",
                    ctx.cfg.teacher.arch)

    @classmethod
    def teacher_needs(cls, cfg):
        return TeacherNeeds(temperatures={"slkd.temperature": cfg.slkd.temperature})

    @classmethod
    def check_combination(cls, names):
        if "kd" in names:
            return "slkd already contains the teacher's KD term (lambda * (1 - alpha) * KD); adding kd counts it twice"
        return None

    def kd(self, student_logits, teacher_logits):
        return kernels.kd_loss(student_logits, teacher_logits, self.temperature)

    def forward(self, out):
        y_t = out.teacher.logits_at(self.temperature)
        y_sl1, _ = self.sl1(out.images)
        y_sl2, _ = self.sl2(out.images)
        terms = {name: self.alpha * F.cross_entropy(y.float(), out.labels) + (1 - self.alpha) * self.kd(y, y_t)
                 for name, y in (("sl1", y_sl1), ("sl2", y_sl2))}
        y_sl = self.rho * y_sl1.float() + (1 - self.rho) * y_sl2.float()
        if self.detach:
            y_sl = y_sl.detach()
        terms["slkd_teacher"] = self.teacher_weight * self.kd(out.student.logits, y_t)
        terms["slkd_sl"] = self.sl_weight * self.kd(out.student.logits, y_sl)
        return terms

    def extra_networks(self):
        return {"sl1": self.sl1, "sl2": self.sl2}
