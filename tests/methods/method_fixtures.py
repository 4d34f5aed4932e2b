"""Helpers for the method tests: a resnet10t student on 16 x 16 images, a fake teacher output."""
import copy

import torch

from pipeline.config import Config, apply
from pipeline.distiller import Distiller
from pipeline.methods import METHODS, MethodContext, NetOutput, build_methods, parse_method
from pipeline.methods.base import ALIASES
from pipeline.models import create_network

CLASSES, TEACHER_DIM, IMAGE = 10, 96, 16  # d_t = 96: not a power of two, unlike the student's 512
NUM_SAMPLES = 40
# Sample i's class (CRD's negatives): classes of unequal sizes (8, 2, 3, 6, 1, 4, 7, 5, 2, 2), not sorted by index.
SAMPLE_LABELS = torch.tensor([0] * 8 + [1] * 2 + [2] * 3 + [3] * 6 + [4] + [5] * 4 + [6] * 7 + [7] * 5 + [8] * 2
                             + [9] * 2)[torch.randperm(NUM_SAMPLES, generator=torch.Generator().manual_seed(1))]
# Every registered method and alias, plus combinations that exercise two views in a one-view method.
SPECS = sorted(METHODS) + sorted(ALIASES) + ["icd+kd", "slkd+icd", "crd+dkd", "icd+ccd", "crd+kd"]
SMALL = {"crd": {"nce_k": 24}}  # K < N here; K >= N is tested on its own


def make_config(spec: str, **sections) -> Config:
    cfg = Config(method=spec)
    apply(cfg, {"student": {"arch": "resnet10t"}, "teacher": {"arch": "resnet10t"}, **copy.deepcopy(SMALL)}, "test")
    apply(cfg, sections, "test")
    return cfg


def build_distiller(cfg: Config, seed: int = 0) -> Distiller:
    torch.manual_seed(seed)

    def network(arch):
        return create_network(type(cfg.student)(arch=arch), CLASSES, cfg.data.mean, cfg.data.std)

    student = network(cfg.student.arch)
    ctx = MethodContext(cfg=cfg, student_dim=student.feature_dim, teacher_dim=TEACHER_DIM, num_classes=CLASSES,
                        num_train_samples=NUM_SAMPLES, build_teacher_like=lambda: network(cfg.teacher.arch),
                        sample_labels=lambda: SAMPLE_LABELS)
    return Distiller(student, build_methods(cfg.method, ctx), cfg.train.ce_weight)


def views_of(spec: str) -> int:
    return max(METHODS[n].views for n in parse_method(spec))


def make_batch(spec: str, batch: int = 6, seed: int = 0) -> dict:
    """The Distiller's forward arguments: `views` views of `batch` images, a fake teacher output, indices."""
    gen = torch.Generator().manual_seed(seed)
    views = views_of(spec)
    n = views * batch
    labels = torch.randint(CLASSES, (batch,), generator=gen).repeat(views)
    teacher = NetOutput(torch.randn(n, CLASSES, generator=gen) * 3, torch.randn(n, TEACHER_DIM, generator=gen).relu())
    return dict(images=torch.randn(n, 3, IMAGE, IMAGE, generator=gen), labels=labels, teacher=teacher,
                views=views, index=torch.randperm(NUM_SAMPLES, generator=gen)[:batch])
