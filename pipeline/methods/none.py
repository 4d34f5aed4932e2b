"""`none`: cross-entropy alone (the trainer's CE term): the student baseline, and how a teacher is trained."""
from pipeline.methods.base import Method, register


@register("none")
class NoDistillation(Method):
    needs_teacher = False

    @classmethod
    def check_combination(cls, names):
        if len(names) > 1:
            return "'none' trains on cross-entropy alone and cannot be combined"
        return None

    def forward(self, out):
        return {}
