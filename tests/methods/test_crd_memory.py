"""CRD against the CRD paper's NCE objective and the official code's memory semantics (float64 where it matters)."""
import math

import pytest
import torch
import torch.nn.functional as F

from method_fixtures import NUM_SAMPLES, build_distiller, make_batch, make_config
from pipeline.methods import NetOutput, Outputs
from pipeline.methods.crd import nce_loss


def nce_formula(p, num_data):
    """The paper's NCE with the uniform noise Pn = 1/N: h = P / (P + K Pn);
    loss = -(1/B) sum_i [log h(positive_i) + sum_k log(1 - h(negative_ik))]."""
    k = p.shape[1] - 1
    total = 0.0
    for row in p.tolist():
        h = [x / (x + k / num_data) for x in row]
        total += math.log(h[0]) + sum(math.log(1 - x) for x in h[1:])
    return -total / p.shape[0]


def test_nce_loss_matches_the_paper():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(5, 18, generator=gen, dtype=torch.float64) * 1e-2
    # The official eps = 1e-7 in the denominators is the only difference.
    assert nce_loss(p, 1000).item() == pytest.approx(nce_formula(p, 1000), rel=1e-4)


def crd_setup(nce_k=24, **crd):
    model = build_distiller(make_config("crd", crd={"nce_k": nce_k, **crd})).train()
    return model, model.methods[0]


def outputs(model, batch):
    logits, features = model.student(batch["images"])
    return Outputs(images=batch["images"], labels=batch["labels"], student=NetOutput(logits, features),
                   teacher=batch["teacher"], views=batch["views"], index=batch["index"])


def test_init_follows_the_official_code():
    _, crd = crd_setup()
    stdv = 1 / math.sqrt(128 / 3)
    for bank in (crd.bank_s, crd.bank_t):
        assert bank.shape == (NUM_SAMPLES, 128)
        assert bank.abs().max() <= stdv and bank.abs().max() > 0.9 * stdv
    assert not torch.equal(crd.bank_s, crd.bank_t)
    assert (crd.z < 0).all()  # Z not set yet


def test_loss_z_and_bank_update_against_a_float64_recomputation():
    model, crd = crd_setup(momentum=0.3)  # asymmetric: swapping old and new rows' weights must show
    batch = make_batch("crd", batch=5)
    out = outputs(model, batch)
    index = batch["index"]
    contrast = crd.sample_contrast(index)
    assert contrast.shape == (5, 25) and torch.equal(contrast[:, 0], index)
    assert contrast.min() >= 0 and contrast.max() < NUM_SAMPLES
    crd.sample_contrast = lambda index: contrast  # fix the draw to recompute it below
    bank_s, bank_t = crd.bank_s.double().clone(), crd.bank_t.double().clone()
    v_s = F.normalize(crd.embed_s(out.student.features).double(), dim=1)
    v_t = F.normalize(crd.embed_t(batch["teacher"].features).double(), dim=1)

    loss = crd(out)["crd"]

    # Scores: each embedding against the other network's bank rows, exp(. / 0.07).
    e_s = torch.stack([torch.exp(bank_t[contrast[i]] @ v_s[i] / 0.07) for i in range(5)])
    e_t = torch.stack([torch.exp(bank_s[contrast[i]] @ v_t[i] / 0.07) for i in range(5)])
    z = torch.stack([e_s.mean(), e_t.mean()]) * NUM_SAMPLES  # first batch: Z := mean * N
    assert torch.allclose(crd.z.double(), z, rtol=1e-5)
    expected = 0.8 * (nce_formula(e_s / z[0], NUM_SAMPLES) + nce_formula(e_t / z[1], NUM_SAMPLES))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # Memory: rows of this batch move to normalize(0.3 * old + 0.7 * new); the others stay.
    for bank, old, v in ((crd.bank_s, bank_s, v_s), (crd.bank_t, bank_t, v_t)):
        assert torch.allclose(bank[index].double(), F.normalize(0.3 * old[index] + 0.7 * v, dim=1), atol=1e-6)
        rest = torch.ones(NUM_SAMPLES, dtype=torch.bool)
        rest[index] = False
        assert torch.equal(bank[rest].double(), old[rest])


def test_z_is_fixed_after_the_first_batch():
    model, crd = crd_setup()
    crd(outputs(model, make_batch("crd", seed=0)))
    z = crd.z.clone()
    crd(outputs(model, make_batch("crd", seed=1)))
    assert (z > 0).all() and torch.equal(crd.z, z)


def test_more_negatives_than_samples_draws_with_replacement():
    model, crd = crd_setup(nce_k=3 * NUM_SAMPLES)
    batch = make_batch("crd")
    terms = crd(outputs(model, batch))
    assert torch.isfinite(terms["crd"])
    contrast = crd.sample_contrast(batch["index"])
    assert contrast.shape[1] == 3 * NUM_SAMPLES + 1


def test_two_views_use_view_a():
    """crd+dkd: features are (2B, d); CRD keys the first B rows (view a) by out.index."""
    model = build_distiller(make_config("crd+dkd", crd={"nce_k": 24, "momentum": 0.3})).train()
    crd = model.methods[0]
    batch = make_batch("crd+dkd", batch=4)
    out = outputs(model, batch)
    v_s = F.normalize(crd.embed_s(out.student.features[:4]), dim=1).detach()
    old = crd.bank_s.clone()
    crd(out)
    index = batch["index"]
    assert torch.allclose(crd.bank_s[index], F.normalize(0.3 * old[index] + 0.7 * v_s, dim=1), atol=1e-6)


def test_bank_update_rule_worked_by_hand():
    """momentum m = 0.25, 2-d embeddings: row <- normalize(m * old + (1 - m) * new), both banks, other rows kept.

    bank_s row 3: old (1, 0), new (0, 1): (0.25, 0.75) / sqrt(0.625) = (0.316228, 0.948683)
    bank_t row 3: old (0.6, 0.8), new (1, 0): (0.9, 0.2) / sqrt(0.85) = (0.976187, 0.216930)
    bank_s row 5: old (0, -1), new (0.8, 0.6): (0.6, 0.2) / sqrt(0.4) = (0.948683, 0.316228)
    bank_t row 5: old (1, 0), new (1, 0): unchanged (1, 0)
    """
    _, crd = crd_setup(momentum=0.25, dim=2)
    crd.bank_s.fill_(0.5)
    crd.bank_t.fill_(-0.5)
    crd.bank_s[3], crd.bank_t[3] = torch.tensor([1.0, 0.0]), torch.tensor([0.6, 0.8])
    crd.bank_s[5], crd.bank_t[5] = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 0.0])
    crd.update_banks(torch.tensor([3, 5]), torch.tensor([[0.0, 1.0], [0.8, 0.6]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.allclose(crd.bank_s[3], torch.tensor([0.316228, 0.948683]), atol=1e-6)
    assert torch.allclose(crd.bank_t[3], torch.tensor([0.976187, 0.216930]), atol=1e-6)
    assert torch.allclose(crd.bank_s[5], torch.tensor([0.948683, 0.316228]), atol=1e-6)
    assert torch.allclose(crd.bank_t[5], torch.tensor([1.0, 0.0]), atol=1e-6)
    untouched = [i for i in range(NUM_SAMPLES) if i not in (3, 5)]
    assert (crd.bank_s[untouched] == 0.5).all() and (crd.bank_t[untouched] == -0.5).all()
