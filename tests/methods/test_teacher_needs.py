"""What each method declares it reads from the teacher, and that it reads exactly that (a spy teacher)."""
import pytest
import torch

from method_fixtures import SPECS, build_distiller, make_batch, make_config
from pipeline.methods import METHODS, TeacherNeeds, parse_method, teacher_needs

TEMPERATURES = {"kd": {"temperature": 2.5}, "dkd": {"temperature": 3.0}, "slkd": {"temperature": 1.5}}


class SpyTeacher:
    """Answers like a live teacher and records what a method asked for."""

    def __init__(self, logits, features):
        self._logits, self._features = logits, features
        self.temperatures, self.read_features = set(), False

    def logits_at(self, temperature):
        self.temperatures.add(temperature)
        return self._logits

    @property
    def features(self):
        self.read_features = True
        return self._features


@pytest.mark.parametrize("name, expected", [
    ("kd", TeacherNeeds(temperatures={"kd.temperature": 2.5})),
    ("dkd", TeacherNeeds(temperatures={"dkd.temperature": 3.0}, approximate_below_all_classes=("dkd",))),
    ("slkd", TeacherNeeds(temperatures={"slkd.temperature": 1.5})),
    ("icd", TeacherNeeds(features=("icd",))),
    ("ccd", TeacherNeeds(features=("ccd",))),
    ("crd", TeacherNeeds(features=("crd",))),
    ("none", TeacherNeeds()),
])
def test_each_method_declares_its_needs(name, expected):
    assert teacher_needs(name, make_config(name, **TEMPERATURES)) == expected


def test_needs_combine_over_terms():
    needs = teacher_needs("dccd", make_config("dccd", **TEMPERATURES))
    assert needs == TeacherNeeds(temperatures={"kd.temperature": 2.5, "dkd.temperature": 3.0}, features=("ccd",),
                                 approximate_below_all_classes=("dkd",))


def test_needs_teacher_agrees_with_the_declaration():
    cfg = make_config("kd")
    for name, cls in METHODS.items():
        assert cls.needs_teacher == bool(cls.teacher_needs(cfg)), name


@pytest.mark.parametrize("spec", SPECS)
def test_a_method_reads_what_it_declares_and_nothing_else(spec):
    """Every term's loss with a teacher that only offers logits_at(T) and features equals the loss with
    the live NetOutput bit for bit, and the spy saw exactly the declared temperatures and feature reads."""
    cfg = make_config(spec, **TEMPERATURES)
    batch = make_batch(spec)
    live = build_distiller(cfg, seed=0).train()(**batch)
    spy = SpyTeacher(batch["teacher"].logits, batch["teacher"].features)
    spied = build_distiller(cfg, seed=0).train()(**{**batch, "teacher": spy})
    assert live.keys() == spied.keys()
    for key in live:
        assert torch.equal(live[key], spied[key]), key
    needs = teacher_needs(spec, cfg)
    assert spy.temperatures == set(needs.temperatures.values())
    assert spy.read_features == bool(needs.features)
    assert all(n in parse_method(spec) for n in needs.features)
