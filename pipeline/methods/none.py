"""`none`: cross-entropy alone (the trainer's CE term): the student baseline, and how a teacher is trained."""
from pipeline.methods.base import Method, register


@register("none")
class NoDistillation(Method):
    needs_teacher = False

    def forward(self, out):
        return {}
