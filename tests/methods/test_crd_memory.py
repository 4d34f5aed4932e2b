"""CRD against the CRD paper's NCE objective and the official code's memory semantics (float64 where it matters)."""
import math

import pytest
import torch
import torch.nn.functional as F

from method_fixtures import CLASSES, NUM_SAMPLES, SAMPLE_LABELS, build_distiller, make_batch, make_config
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


def test_official_sampler_draws_uniformly_from_other_classes():
    """Every sample as an anchor, K = 3000 draws each: no draw shares the anchor's class, and, per anchor class
    c, each sample j of another class is drawn about (anchors of class c) * K / (N - n_c) times."""
    torch.manual_seed(0)
    _, crd = crd_setup(nce_k=3000)
    index = torch.arange(NUM_SAMPLES)
    contrast = crd.sample_contrast(index)
    assert contrast.shape == (NUM_SAMPLES, 3001) and torch.equal(contrast[:, 0], index)
    labels = SAMPLE_LABELS.tolist()
    size = {c: labels.count(c) for c in range(CLASSES)}
    for c in range(CLASSES):
        anchors = [i for i in range(NUM_SAMPLES) if labels[i] == c]
        drawn = contrast[anchors, 1:].flatten().tolist()
        assert all(labels[j] != c for j in drawn), f"class {c}: a same-class negative"
        counts = [drawn.count(j) for j in range(NUM_SAMPLES)]
        expected = len(anchors) * 3000 / (NUM_SAMPLES - size[c])
        for j in range(NUM_SAMPLES):
            if labels[j] != c:  # binomial sd < sqrt(expected): 6 sd is a generous bound
                assert abs(counts[j] - expected) < 6 * math.sqrt(expected), (c, j, counts[j], expected)


def masked_nce_float64(e, z, num_data, keep):
    """The paper's NCE on scores e / z, negatives where keep is False left out; K Pn keeps the nominal K."""
    m = (e.shape[1] - 1) / num_data
    total = e.new_zeros(())
    for i in range(e.shape[0]):
        p = e[i] / z
        total = total + torch.log(p[0] / (p[0] + m))
        for k in range(1, e.shape[1]):
            if keep[i][k - 1]:
                total = total + torch.log(1 - p[k] / (p[k] + m))
    return -total / e.shape[0]


def test_shared_negatives_loss_gradient_and_banks_against_float64():
    model, crd = crd_setup(shared_negatives=True, momentum=0.3)
    batch = make_batch("crd", batch=5)
    out = outputs(model, batch)
    index = batch["index"]
    # Fixed negatives: every sample once (so each anchor meets its own class, itself included), then repeats.
    negatives = torch.cat([torch.arange(NUM_SAMPLES), torch.tensor([index[0].item()] * 3 + [7, 7])])
    crd.sample_shared = lambda device: negatives
    labels = SAMPLE_LABELS.tolist()
    keep = [[labels[n] != labels[a] for n in negatives.tolist()] for a in index.tolist()]
    assert any(not x for row in keep for x in row) and all(any(row) for row in keep)
    bank_s, bank_t = crd.bank_s.double().clone(), crd.bank_t.double().clone()
    heads = {name: [p.detach().double().requires_grad_() for p in (m.weight, m.bias)]
             for name, m in (("s", crd.embed_s), ("t", crd.embed_t))}
    f_s, f_t = out.student.features.detach().double(), batch["teacher"].features.double()
    v_s = F.normalize(f_s @ heads["s"][0].T + heads["s"][1], dim=1)
    v_t = F.normalize(f_t @ heads["t"][0].T + heads["t"][1], dim=1)

    loss = crd(out)["crd"]
    loss.backward()

    k = len(negatives)
    rows = lambda bank, i: torch.cat([bank[index[i]][None], bank[negatives]])  # noqa: E731
    e_s = torch.stack([torch.exp(rows(bank_t, i) @ v_s[i] / 0.07) for i in range(5)])
    e_t = torch.stack([torch.exp(rows(bank_s, i) @ v_t[i] / 0.07) for i in range(5)])
    counted = torch.tensor([[True] + row for row in keep])
    z = torch.stack([e[counted].mean() for e in (e_s, e_t)]).detach() * NUM_SAMPLES
    assert torch.allclose(crd.z.double(), z, rtol=1e-5)
    expected = 0.8 * (masked_nce_float64(e_s, z[0], NUM_SAMPLES, keep) + masked_nce_float64(e_t, z[1], NUM_SAMPLES, keep))
    assert e_s.shape == (5, k + 1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    expected.backward()
    for name, m in (("s", crd.embed_s), ("t", crd.embed_t)):
        for got, ref in zip((m.weight.grad, m.bias.grad), heads[name]):
            err = (got.double() - ref.grad).norm() / ref.grad.norm()
            assert err < 1e-4, (name, err.item())
    # Banks: as with the official negatives, normalize(0.3 * old + 0.7 * new) on the batch's rows only.
    for bank, old, v in ((crd.bank_s, bank_s, v_s), (crd.bank_t, bank_t, v_t)):
        assert torch.allclose(bank[index].double(), F.normalize(0.3 * old[index] + 0.7 * v.detach(), dim=1), atol=1e-6)
        rest = torch.ones(NUM_SAMPLES, dtype=torch.bool)
        rest[index] = False
        assert torch.equal(bank[rest].double(), old[rest])


def test_shared_negatives_draw_over_all_samples():
    torch.manual_seed(0)
    _, crd = crd_setup(nce_k=4000, shared_negatives=True)
    drawn = crd.sample_shared(torch.device("cpu"))
    assert drawn.shape == (4000,) and drawn.min() >= 0 and drawn.max() < NUM_SAMPLES
    counts = torch.bincount(drawn, minlength=NUM_SAMPLES)
    assert (counts - 100).abs().max() < 6 * 10  # 4000 / 40 = 100 each, sd < 10


# ---- the per-process, counter-based negative draws (pipeline/methods/draws.py) ----------------------------
def test_draws_are_a_pure_function_of_seed_process_and_counter():
    from pipeline.methods.draws import random_below

    def draw(seed=3, process=0, counter=5, high=1000):
        return random_below(high, (64,), seed, process, torch.tensor(counter))
    base = draw()
    assert torch.equal(base, draw())  # the same key: the same numbers (a resumed run draws them again)
    assert base.min() >= 0 and base.max() < 1000
    for other in (draw(seed=4), draw(process=1), draw(counter=6)):  # each field changes the stream
        assert (other == base).float().mean() < 0.05  # ~1/1000 agree by chance
    rows = random_below(torch.tensor([[3], [5]]), (2, 400), 0, 0, torch.tensor(0))  # one bound per row
    assert set(rows[0].tolist()) == {0, 1, 2} and set(rows[1].tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("high", [7, 10, 3 * 2**40])
def test_draws_are_uniform(high):
    """200,000 draws: each of 7 or 10 values (or 10 equal bins of a 2^41.6 range) gets n / bins +- 6 sd."""
    from pipeline.methods.draws import random_below

    n = 200_000
    x = random_below(high, (n,), 0, 2, torch.tensor(9))
    bins = min(high, 10)
    counts = torch.bincount(x * bins // high, minlength=bins).double()
    expected = n / bins
    assert (counts - expected).abs().max() < 6 * math.sqrt(expected), counts


def test_crd_draws_advance_each_step_and_resume_from_the_checkpointed_counter():
    model, crd = crd_setup()
    index = torch.arange(5)
    first = crd.sample_contrast(index)
    crd(outputs(model, make_batch("crd", batch=5)))
    assert crd.draws.item() == 1 and "methods.0.draws" in model.state_dict()
    second = crd.sample_contrast(index)
    assert not torch.equal(first, second)  # a new block of the stream each step
    resumed = build_distiller(make_config("crd", crd={"nce_k": 24}), seed=1)  # other initial weights
    resumed.load_state_dict(model.state_dict())
    assert torch.equal(resumed.methods[0].sample_contrast(index), second)


@pytest.mark.slow  # inductor's C++ compile: ~30 s on 2 cores (bench/gpu_check.py checks the same on CUDA)
def test_draws_are_the_same_compiled():
    """The 64-bit wrapping arithmetic survives inductor: its constant folding computes with unbounded
    integers, which a large constant multiplied inside the graph would overflow."""
    from pipeline.methods.draws import random_below

    def draw(counter, high):
        return random_below(high, (4, 1000), 7, 3, counter)
    high = torch.tensor([[37], [1000], [2**40], [3]])
    assert torch.equal(torch.compile(draw, backend="inductor")(torch.tensor(5), high), draw(torch.tensor(5), high))
