"""What each method's terms are: view pairing, weights, what is detached, SLKD's teachers, combination errors.

Expected values come from tests/methods/formulas.py (float64, explicit loops), never from kernels.reference,
which is what the methods themselves call on CPU. Hyperparameters are off their defaults so a method that
ignores its config (or a kernel that hard-codes a default) fails.
"""
import logging

import pytest
import torch
import torch.nn.functional as F

from formulas import ccd_formula, dkd_formula, icd_formula, kd_formula
from method_fixtures import TEACHER_DIM, build_distiller, make_batch, make_config
from pipeline.methods import Method, NetOutput, Outputs, parse_method
from pipeline.methods.slkd import build_seeded


def outputs(model, batch) -> Outputs:
    logits, features = model.student(batch["images"])
    return Outputs(images=batch["images"], labels=batch["labels"], student=NetOutput(logits, features),
                   teacher=batch["teacher"], views=batch["views"], index=batch["index"])


def halves(x):
    return x.chunk(2)


def f64(x):
    return x.detach().double()


def test_ccd_pairs_each_student_view_with_the_other_teacher_view():
    # Non-default theta and eps (the method must pass its own, not the kernel's defaults); the expected
    # value is the float64 formula of tests/methods/formulas.py, never kernels.reference.
    model = build_distiller(make_config("ccd", ccd={"theta": 0.9, "eps": 0.01})).train()
    batch = make_batch("ccd")
    out = outputs(model, batch)
    ccd = model.methods[0]
    assert ccd.weight == pytest.approx(25.6 / TEACHER_DIM)
    c_a, c_b = halves(f64(ccd.transform(out.student.features)))
    t_a, t_b = halves(f64(batch["teacher"].features))
    crosswise = ccd_formula(c_a, t_b, 0.9, 0.01) + ccd_formula(c_b, t_a, 0.9, 0.01)
    samewise = ccd_formula(c_a, t_a, 0.9, 0.01) + ccd_formula(c_b, t_b, 0.9, 0.01)
    got = ccd(out)["ccd"].double()
    assert torch.allclose(got, 25.6 / TEACHER_DIM * crosswise, rtol=1e-5)
    assert not torch.allclose(got, 25.6 / TEACHER_DIM * samewise, rtol=1e-3)
    assert build_distiller(make_config("ccd", ccd={"weight": 0.4})).methods[0].weight == 0.4


def test_dkd_is_kd_on_view_differences():
    model = build_distiller(make_config("dkd", dkd={"temperature": 3.0, "weight": 0.7})).train()
    batch = make_batch("dkd")
    out = outputs(model, batch)
    s_a, s_b = halves(f64(out.student.logits))
    t_a, t_b = halves(f64(batch["teacher"].logits))
    expected = 0.7 * dkd_formula(s_a, s_b, t_a, t_b, 3.0)
    assert torch.allclose(model.methods[0](out)["dkd"].double(), expected, rtol=1e-5)
    # view a minus view b, not b minus a: the two directions weigh the softmaxes differently
    swapped = 0.7 * dkd_formula(s_a, s_b, t_b, t_a, 3.0)
    assert not torch.allclose(expected, swapped, rtol=1e-3)


def test_kd_and_ce_average_over_both_views():
    model = build_distiller(make_config("dccd", kd={"temperature": 2.0, "weight": 0.6},
                                        train={"ce_weight": 1.5})).train()
    batch = make_batch("dccd")
    terms = model(**batch)
    logits = f64(model.student(batch["images"])[0])
    per_view = [kd_formula(s, t, 2.0) for s, t in zip(halves(logits), halves(f64(batch["teacher"].logits)))]
    assert torch.allclose(terms["kd"].double(), 0.6 * sum(per_view) / 2, rtol=1e-5)
    # CE by hand: -log softmax(logits)[label], averaged over all 2B rows (both views)
    log_p = logits - logits.logsumexp(dim=1, keepdim=True)
    ce = -log_p[torch.arange(logits.shape[0]), batch["labels"]].mean()
    assert torch.allclose(terms["ce"].double(), 1.5 * ce, rtol=1e-5)


def test_icd_averages_views_and_keeps_the_teacher_features_out_of_the_graph():
    # alpha and max_scale off their defaults (exp(1) = 2.72 > 2: the clamp at 2 decides the scale)
    model = build_distiller(make_config("icd+ccd", icd={"alpha": 0.8, "max_scale": 2.0, "weight": 1.3})).train()
    batch = make_batch("icd+ccd")
    batch["teacher"].features.requires_grad_(True)
    out = outputs(model, batch)
    icd = model.methods[0]
    z_s = F.normalize(f64(icd.head_s(out.student.features)), dim=1)
    z_t = F.normalize(f64(icd.head_t(batch["teacher"].features)), dim=1)
    per_view = [icd_formula(s, t, f64(icd.log_scale), f64(icd.bias), alpha=0.8, max_scale=2.0)
                for s, t in zip(halves(z_s), halves(z_t))]
    got = icd(out)["icd"]
    assert torch.allclose(got.double(), 1.3 * sum(per_view) / 2, rtol=1e-5)
    got.backward()
    assert batch["teacher"].features.grad is None  # f_t is detached
    assert icd.head_t.weight.grad.abs().sum() > 0  # while the teacher's head learns


def test_slkd_student_loss_follows_eq7():
    cfg = make_config("slkd", slkd={"lam": 1.5, "eta": 2.0, "alpha": 0.2, "rho": 0.3, "temperature": 3.0})
    model = build_distiller(cfg).train()
    batch = make_batch("slkd")
    terms = model(**batch)
    slkd = model.methods[0]
    assert model.ce_weight == pytest.approx((1.5 + 2.0) * 0.2)  # both CE terms of eq. 7, folded
    s = f64(model.student(batch["images"])[0])
    y1, y2 = f64(slkd.sl1(batch["images"])[0]), f64(slkd.sl2(batch["images"])[0])
    t, y = f64(batch["teacher"].logits), batch["labels"]
    assert torch.allclose(terms["slkd_teacher"].double(), 1.5 * 0.8 * kd_formula(s, t, 3.0), rtol=1e-5)
    assert torch.allclose(terms["slkd_sl"].double(), 2.0 * 0.8 * kd_formula(s, 0.3 * y1 + 0.7 * y2, 3.0), rtol=1e-5)
    for name, logits in (("sl1", y1), ("sl2", y2)):  # eq. 4-5
        ce = -(logits - logits.logsumexp(dim=1, keepdim=True))[torch.arange(len(y)), y].mean()
        expected = 0.2 * ce + 0.8 * kd_formula(logits, t, 3.0)
        assert torch.allclose(terms[name].double(), expected, rtol=1e-5)


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
