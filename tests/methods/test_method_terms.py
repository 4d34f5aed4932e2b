"""What each method's terms are: view pairing, weights, what is detached, SLKD's teachers, combination errors."""
import logging

import pytest
import torch
import torch.nn.functional as F

from kernels import reference
from method_fixtures import TEACHER_DIM, build_distiller, make_batch, make_config
from pipeline.methods import Method, NetOutput, Outputs, parse_method
from pipeline.methods.slkd import build_seeded


def outputs(model, batch) -> Outputs:
    logits, features = model.student(batch["images"])
    return Outputs(images=batch["images"], labels=batch["labels"], student=NetOutput(logits, features),
                   teacher=batch["teacher"], views=batch["views"], index=batch["index"])


def halves(x):
    return x.chunk(2)


def test_ccd_pairs_each_student_view_with_the_other_teacher_view():
    model = build_distiller(make_config("ccd")).train()
    batch = make_batch("ccd")
    out = outputs(model, batch)
    ccd = model.methods[0]
    assert ccd.weight == pytest.approx(25.6 / TEACHER_DIM)
    c_a, c_b = halves(ccd.transform(out.student.features))
    t_a, t_b = halves(batch["teacher"].features)
    crosswise = reference.ccd_loss(c_a, t_b) + reference.ccd_loss(c_b, t_a)
    samewise = reference.ccd_loss(c_a, t_a) + reference.ccd_loss(c_b, t_b)
    got = ccd(out)["ccd"]
    assert torch.allclose(got, ccd.weight * crosswise, rtol=1e-5)
    assert not torch.allclose(got, ccd.weight * samewise, rtol=1e-3)
    assert build_distiller(make_config("ccd", ccd={"weight": 0.4})).methods[0].weight == 0.4


def test_dkd_is_kd_on_view_differences():
    model = build_distiller(make_config("dkd")).train()
    batch = make_batch("dkd")
    out = outputs(model, batch)
    s_a, s_b = halves(out.student.logits)
    t_a, t_b = halves(batch["teacher"].logits)
    d_s, d_t = s_a - s_b, t_a - t_b
    expected = 0.5 * (reference.kd_loss(d_s, d_t, 4.0) + reference.kd_loss(-d_s, -d_t, 4.0))
    assert torch.allclose(model.methods[0](out)["dkd"], expected, rtol=1e-5)


def test_kd_and_ce_average_over_both_views():
    model = build_distiller(make_config("dccd")).train()
    batch = make_batch("dccd")
    terms = model(**batch)
    logits = model.student(batch["images"])[0]
    per_view = [reference.kd_loss(s, t, 4.0) for s, t in zip(halves(logits), halves(batch["teacher"].logits))]
    assert torch.allclose(terms["kd"], sum(per_view) / 2, rtol=1e-5)
    ce = [F.cross_entropy(s, y) for s, y in zip(halves(logits), halves(batch["labels"]))]
    assert torch.allclose(terms["ce"], sum(ce) / 2, rtol=1e-5)


def test_icd_averages_views_and_keeps_the_teacher_features_out_of_the_graph():
    model = build_distiller(make_config("icd+ccd")).train()
    batch = make_batch("icd+ccd")
    batch["teacher"].features.requires_grad_(True)
    out = outputs(model, batch)
    icd = model.methods[0]
    z_s = F.normalize(icd.head_s(out.student.features), dim=1)
    z_t = F.normalize(icd.head_t(batch["teacher"].features), dim=1)
    per_view = [reference.icd_loss(s, t, icd.log_scale, icd.bias) for s, t in zip(halves(z_s), halves(z_t))]
    got = icd(out)["icd"]
    assert torch.allclose(got, sum(per_view) / 2, rtol=1e-5)
    got.backward()
    assert batch["teacher"].features.grad is None  # f_t is detached
    assert icd.head_t.weight.grad.abs().sum() > 0  # while the teacher's head learns


def test_slkd_student_loss_follows_eq7():
    cfg = make_config("slkd", slkd={"lam": 1.5, "eta": 2.0, "alpha": 0.2, "rho": 0.3})
    model = build_distiller(cfg).train()
    batch = make_batch("slkd")
    terms = model(**batch)
    slkd = model.methods[0]
    assert model.ce_weight == pytest.approx((1.5 + 2.0) * 0.2)  # both CE terms of eq. 7, folded
    s = model.student(batch["images"])[0]
    y1, y2 = slkd.sl1(batch["images"])[0], slkd.sl2(batch["images"])[0]
    t, y = batch["teacher"].logits, batch["labels"]
    assert torch.allclose(terms["slkd_teacher"], 1.5 * 0.8 * reference.kd_loss(s, t, 4.0), rtol=1e-5)
    assert torch.allclose(terms["slkd_sl"], 2.0 * 0.8 * reference.kd_loss(s, 0.3 * y1 + 0.7 * y2, 4.0), rtol=1e-5)
    for name, logits in (("sl1", y1), ("sl2", y2)):  # eq. 4-5
        expected = 0.2 * F.cross_entropy(logits, y) + 0.8 * reference.kd_loss(logits, t, 4.0)
        assert torch.allclose(terms[name], expected, rtol=1e-5)


@pytest.mark.parametrize("detach", [True, False])
def test_slkd_detach_decides_whether_the_student_loss_trains_the_sl_teachers(detach):
    model = build_distiller(make_config("slkd", slkd={"detach": detach})).train()
    terms = model(**make_batch("slkd"))
    (terms["slkd_sl"] + terms["ce"]).backward()  # the student's terms only
    sl_grads = [p.grad for p in model.methods[0].sl1.parameters()]
    if detach:
        assert all(g is None for g in sl_grads)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in sl_grads)


def test_slkd_teachers_are_distinct_seeded_inits_that_leave_the_global_rng_alone(caplog):
    with caplog.at_level(logging.WARNING):
        slkd = build_distiller(make_config("slkd"), seed=5).methods[0]
    assert any("self-learning teachers" in r.message for r in caplog.records)  # the cost is announced
    assert set(slkd.extra_networks()) == {"sl1", "sl2"}
    first_conv = lambda m: m.sl1.model.conv1[0].weight  # noqa: E731
    assert not torch.equal(first_conv(slkd), slkd.sl2.model.conv1[0].weight)
    same_seed = build_distiller(make_config("slkd"), seed=6).methods[0]  # the caller's RNG state does not matter
    assert torch.equal(first_conv(same_seed), first_conv(slkd))
    other_seed = build_distiller(make_config("slkd", train={"seed": 1}), seed=5).methods[0]
    assert not torch.equal(first_conv(other_seed), first_conv(slkd))
    rng = torch.get_rng_state()
    build_seeded(lambda: torch.nn.Linear(4, 4), 123)
    assert torch.equal(torch.get_rng_state(), rng)  # so adding slkd does not change the student's init


@pytest.mark.parametrize("spec, message", [
    ("slkd+kd", "counts it twice"),
    ("none+icd", "cannot be combined"),
    ("icd+icd", "more than once"),
    ("dccd+kd", "more than once"),
    ("crd+foo", "unknown method term 'foo'"),
])
def test_impossible_combinations_are_errors_that_say_why(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_method(spec)


def test_slkd_combines_with_icd():
    assert parse_method("slkd+icd") == ["slkd", "icd"]


def test_a_repeated_term_name_is_an_error_not_a_silent_overwrite():
    class ShadowsCE(Method):
        name = "shadows_ce"

        def forward(self, out):
            return {"ce": out.student.logits.sum() * 0}

    model = build_distiller(make_config("kd"))
    model.methods.append(ShadowsCE(None))
    with pytest.raises(ValueError, match="shadows_ce returns loss terms \\['ce'\\]"):
        model(**make_batch("kd"))
