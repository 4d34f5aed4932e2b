"""Records -> teacher logits per temperature: the cached target's softmax, checked in float64, and the
methods' loss terms from the cache against the live teacher's."""
import numpy as np
import pytest
import torch

from cache_fixtures import teacher_features, teacher_logits, view_major
from method_fixtures import NUM_SAMPLES, TEACHER_DIM, build_distiller, make_batch, make_config, views_of
from pipeline.methods import NetOutput, Outputs
from pipeline.teacher_cache.encode import encode_records
from pipeline.teacher_cache.rebuild import EXTRA_KEYS, CachedTeacher, rebuild

C = 10


def rel(out, ref) -> float:
    out, ref = torch.as_tensor(out, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    return float((out - ref).norm() / ref.norm())


def extras_of(records: np.ndarray) -> dict[str, torch.Tensor]:
    """(B, views) records -> {batch key: (views * B, ...)} view-major, as a loader's attach_extras delivers."""
    b, views = records.shape
    return {EXTRA_KEYS[name]: torch.from_numpy(np.ascontiguousarray(records[name].swapaxes(0, 1)))
            .reshape(views * b, *records[name].shape[2:]) for name in records.dtype.names}


def sparse_target(y: torch.Tensor, k: int, t: float) -> torch.Tensor:
    """float64: softmax(y / T) on the top K, the rest of the mass spread evenly over the other classes."""
    p = torch.softmax(y.double() / t, dim=1)
    top = y.topk(k, dim=1).indices
    q = torch.zeros_like(p).scatter(1, top, p.gather(1, top))
    rest = (1 - q.sum(dim=1, keepdim=True)) / (y.shape[1] - k)
    return torch.where(q > 0, q, rest)


def test_every_class_kept_gives_the_live_softmax_at_any_temperature():
    y = teacher_logits(3, np.arange(8), 0)  # offset ~40: without the shift by the max, fp16 is 2^-6 coarse here
    teacher = rebuild(extras_of(encode_records(y, None, 1, C, [])), C, [], [0.5, 4.0])
    for t in (0.5, 1.0, 4.0):
        out = torch.softmax(teacher.logits_at(t) / t, dim=1)
        assert rel(out, torch.softmax(y.double() / t, dim=1)) < 1e-3, t


@pytest.mark.parametrize("k", [1, 3, 9])
def test_topk_probabilities_and_tail_mass_are_the_teachers(k):
    y = teacher_logits(1, np.arange(12), 0) * torch.linspace(0.5, 3.0, 12)[:, None]  # peaked and flat rows
    stored = [1.0, 4.0]
    teacher = rebuild(extras_of(encode_records(y, None, 1, k, stored)), C, stored, stored)
    for t in stored:  # a swapped temperature column gives the other temperature's tail
        out = torch.softmax(teacher.logits_at(t).double() / t, dim=1)
        ref = sparse_target(y, k, t)
        assert rel(out, ref) < 1e-3, t
        top = y.topk(k, dim=1).indices
        true_tail = 1 - torch.softmax(y.double() / t, dim=1).gather(1, top).sum(dim=1)
        got_tail = 1 - out.gather(1, top).sum(dim=1)
        assert rel(got_tail, true_tail) < 1e-3, t


def test_kd_method_from_the_cache_is_kl_to_the_sparse_target():
    """The kd term with a K = 3 cache: T^2 KL(sparse target || softmax(s / T)), the target from float64."""
    t, k, n = 2.5, 3, 6
    y = teacher_logits(0, np.arange(n), 0)
    s = torch.randn(n, C, generator=torch.Generator().manual_seed(0)) * 2
    cfg = make_config("kd", kd={"temperature": t})
    teacher = rebuild(extras_of(encode_records(y, None, 1, k, [1.0, t])), C, [1.0, t], [t])
    out = Outputs(images=torch.zeros(n, 3, 4, 4), labels=torch.zeros(n, dtype=torch.long),
                  student=NetOutput(s, torch.zeros(n, 4)), teacher=teacher, views=1)
    (got,) = build_distiller(cfg).methods
    q = sparse_target(y, k, t)
    ref = t**2 * (q * (q.log() - torch.log_softmax(s.double() / t, dim=1))).sum(dim=1).mean()
    assert rel(got(out)["kd"], ref) < 1e-3


@pytest.mark.parametrize("spec", ["kd", "dkd+kd", "icd+kd", "ccd+kd", "crd+kd"])
def test_loss_terms_from_a_full_cache_equal_the_live_teachers(spec):
    """K = classes and features stored: every term from the cache equals the term from the live outputs
    on the same views, to the fp16 rounding of the stored values (the issue's equality, without a network)."""
    views, b = views_of(spec), 6
    index = np.arange(b) * 5 % NUM_SAMPLES
    y = view_major([teacher_logits(0, index, v) for v in range(views)])
    f = view_major([teacher_features(0, index, v, TEACHER_DIM) for v in range(views)]).relu()
    live = NetOutput(y, f)
    cached = rebuild(extras_of(encode_records(y, f, views, C, [])), C, [], [4.0])
    batch = make_batch(spec)
    batch["index"] = torch.from_numpy(index)
    terms = {}
    for name, teacher in (("live", live), ("cached", cached)):
        model = build_distiller(make_config(spec), seed=0).train()
        terms[name] = model(**{**batch, "teacher": teacher})
    assert terms["live"].keys() == terms["cached"].keys()
    for key in terms["live"]:
        assert rel(terms["cached"][key].detach(), terms["live"][key].detach()) < 2e-3, key


def test_dkd_from_a_sparse_cache_differs_but_stays_finite():
    """dkd declares itself approximate below K = classes: the term moves, and stays finite."""
    index = np.arange(6)
    y = view_major([teacher_logits(0, index, v) for v in range(2)])
    s = torch.randn(12, C, generator=torch.Generator().manual_seed(1))
    (method,) = build_distiller(make_config("dkd")).methods

    def dkd(teacher):
        return method(Outputs(images=torch.zeros(12, 3, 2, 2), labels=torch.zeros(12, dtype=torch.long),
                              student=NetOutput(s, s), teacher=teacher, views=2))["dkd"]

    sparse = dkd(rebuild(extras_of(encode_records(y, None, 2, 2, [4.0])), C, [4.0], [4.0]))
    assert torch.isfinite(sparse) and rel(sparse, dkd(NetOutput(y, y))) > 1e-2


def test_features_come_back_to_fp16_rounding():
    index = np.arange(5)
    f = view_major([teacher_features(2, index, v) for v in range(2)])
    y = view_major([teacher_logits(2, index, v) for v in range(2)])
    teacher = rebuild(extras_of(encode_records(y, f, 2, 2, [4.0])), C, [4.0], [4.0])
    assert teacher.features.dtype == torch.float32 and rel(teacher.features, f) < 1e-3


def test_a_temperature_not_rebuilt_is_an_error_not_a_guess():
    y = teacher_logits(0, np.arange(3), 0)
    extras = extras_of(encode_records(y, None, 1, 2, [4.0]))
    with pytest.raises(KeyError, match="not at 2.0"):
        rebuild(extras, C, [4.0], [2.0])
    with pytest.raises(KeyError, match="not 1.0"):
        rebuild(extras, C, [4.0], [4.0]).logits_at(1.0)


def test_live_teacher_answers_with_its_own_logits_at_every_temperature():
    y = torch.randn(3, C)
    out = NetOutput(y, torch.zeros(3, 2))
    assert all(out.logits_at(t) is y for t in (0.5, 4.0))
    assert not hasattr(CachedTeacher({1.0: y}, None), "logits")  # a method must say which temperature
