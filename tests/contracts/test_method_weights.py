"""Each method's documented weight multiplies its term (values != 1, so a division or a dropped factor shows),
and CCD's default weight is beta = 25.6 / d_t."""
import torch
import torch.nn.functional as F

from kernels import reference
from pipeline.config import Config, apply
from pipeline.methods import MethodContext, NetOutput, Outputs, build_methods


def context(method: str, teacher_dim: int = 128, **sections) -> MethodContext:
    cfg = apply(Config(method=method), sections, "test")
    return MethodContext(cfg=cfg, student_dim=24, teacher_dim=teacher_dim, num_classes=5, num_train_samples=16,
                         build_teacher_like=lambda: None)


def outputs(views: int = 1, b: int = 6, teacher_dim: int = 128) -> Outputs:
    gen = torch.Generator().manual_seed(3)
    n = views * b
    return Outputs(images=torch.zeros(n, 3, 1, 1), labels=torch.zeros(n, dtype=torch.long), views=views,
                   student=NetOutput(torch.randn(n, 5, generator=gen), torch.randn(n, 24, generator=gen)),
                   teacher=NetOutput(torch.randn(n, 5, generator=gen), torch.randn(n, teacher_dim, generator=gen)))


def test_icd_term_is_weight_times_the_loss():
    (icd,) = build_methods("icd", context("icd", icd={"weight": 0.7, "alpha": 0.3, "max_scale": 5.0}))
    out = outputs()
    z_s = F.normalize(icd.head_s(out.student.features).float(), dim=1)
    z_t = F.normalize(icd.head_t(out.teacher.features).float(), dim=1)
    expected = 0.7 * reference.icd_loss(z_s, z_t, icd.log_scale, icd.bias, 0.3, 5.0)
    torch.testing.assert_close(icd(out)["icd"], expected)


def test_ccd_default_weight_is_25_6_over_teacher_width():
    for d_t, beta in ((64, 0.4), (128, 0.2), (256, 0.1)):  # the paper's values
        (ccd,) = build_methods("ccd", context("ccd", teacher_dim=d_t))
        assert abs(ccd.weight - beta) < 1e-12
    (ccd,) = build_methods("ccd", context("ccd", ccd={"weight": 0.05}))
    assert ccd.weight == 0.05
