"""A cache against a run, and against a pass that continues it: every mismatch is one line naming both sides."""
import pytest

from cache_fixtures import make_manifest
from pipeline.config import Config, apply
from pipeline.errors import BadInputError
from pipeline.methods import teacher_needs
from pipeline.teacher_cache.match import check_continuation, check_run

ROOT = "runs/cache/demo"


def needs(spec, **sections):
    cfg = apply(Config(method=spec), sections, "test")
    return teacher_needs(spec, cfg)


def one_line(info) -> str:
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"teacher cache {ROOT} ")
    return line


def check(manifest, made_from=None, spec="kd", views=1, epochs=2, **sections):
    return check_run(ROOT, manifest, made_from if made_from is not None else dict(manifest.made_from),
                     needs(spec, **sections), views=views, epochs=epochs, method=spec)


def test_a_matching_run_passes():
    m = make_manifest(epochs=2, views=2, topk=3, temperatures=(1.0, 4.0))
    assert check(m, spec="icd+kd", epochs=2) == [] and check(m, spec="ccd+kd", views=2, epochs=1) == []


@pytest.mark.parametrize("label, run_value", [
    ("teacher.arch", "resnet34"),
    ("teacher weights", "sha256:00000000000000cc"),
    ("teacher input mean", [0.5, 0.5, 0.5]),
    ("train listing", "23 samples, 10 classes, sha256:00000000000000dd"),
    ("data.aug_seed", 3),
    ("data.image_size", 224),
    ("data.min_area", 1.0),
])
def test_another_teacher_or_data_names_both_sides(label, run_value):
    m = make_manifest()
    run = {**m.made_from, label: run_value}
    with pytest.raises(BadInputError) as info:
        check(m, run)
    assert one_line(info) == f"teacher cache {ROOT} was made with {label} {m.made_from[label]}, this run has {run_value}"


def test_weights_mismatch_names_where_each_came_from():
    m = make_manifest()
    m.notes = {"teacher weights": "old.safetensors"}
    with pytest.raises(BadInputError) as info:
        check_run(ROOT, m, {**m.made_from, "teacher weights": "sha256:00000000000000cc"}, needs("kd"), views=1,
                  epochs=1, method="kd", notes={"teacher weights": "new.safetensors"})
    assert one_line(info).endswith("was made with teacher weights sha256:00000000000000aa (old.safetensors), "
                                   "this run has sha256:00000000000000cc (new.safetensors)")


def test_a_setting_the_cache_predates_reads_none():
    m = make_manifest()
    with pytest.raises(BadInputError) as info:
        check(m, {**m.made_from, "mixup.alpha": 0.2})
    assert one_line(info).endswith("was made with mixup.alpha none, this run has 0.2")


def test_more_views_than_cached():
    with pytest.raises(BadInputError) as info:
        check(make_manifest(views=1), spec="dkd+kd", views=2)
    assert one_line(info).endswith("was made with 1 view(s) per sample, this run needs 2 (--method dkd+kd)")


def test_more_epochs_than_cached():
    with pytest.raises(BadInputError) as info:
        check(make_manifest(epochs=2), epochs=3)
    assert one_line(info).endswith("was made for 2 epochs, this run has train.epochs 3")


def test_a_temperature_without_tail_mass():
    with pytest.raises(BadInputError) as info:
        check(make_manifest(topk=3, temperatures=(1.0, 4.0)), spec="slkd", slkd={"temperature": 2.0})
    assert one_line(info).endswith("was made with the tail mass at temperatures [1.0, 4.0] (top 3 of 10 classes), "
                                   "this run has slkd.temperature 2.0")


def test_a_cache_of_every_class_serves_any_temperature():
    assert check(make_manifest(topk=10, temperatures=(4.0,)), kd={"temperature": 2.0}) == []


def test_features_the_cache_lacks():
    with pytest.raises(BadInputError) as info:
        check(make_manifest(feature_dim=0), spec="crd+kd")
    assert one_line(info).endswith("was made with teacher.cache_features false, this run needs the teacher's "
                                   "features (crd in --method crd+kd)")


def test_several_differences_name_the_first_and_count_the_rest():
    m = make_manifest(epochs=1, feature_dim=0)
    with pytest.raises(BadInputError) as info:
        check(m, {**m.made_from, "data.aug_seed": 5}, spec="icd+kd", epochs=4)
    assert one_line(info).endswith("was made with data.aug_seed 0, this run has 5 (and 2 more differences)")


def test_dkd_from_a_sparse_cache_is_a_warning_and_exact_from_a_full_one():
    sparse = check(make_manifest(views=2, topk=3, temperatures=(4.0,)), spec="dkd+kd", views=2)
    assert sparse == [f"teacher cache {ROOT} keeps the top 3 of 10 classes: dkd uses the teacher's logits beyond their "
                      "softmax and is approximate from it (exact with teacher.cache_topk 10)"]
    assert check(make_manifest(views=2, topk=10), spec="dkd+kd", views=2) == []


@pytest.mark.parametrize("change, words", [
    (dict(views=1), "views 2, this pass has 1"),
    (dict(topk=5), "teacher.cache_topk (capped at the classes) 3, this pass has 5"),
    (dict(temperatures=(4.0,)), "temperatures [1.0, 4.0], this pass has [4.0]"),
    (dict(feature_dim=0), "feature dim (0: teacher.cache_features false) 6, this pass has 0"),
    (dict(world=2), "processes 3, this pass has 2"),
    (dict(**{"data.aug_seed": 1}), "data.aug_seed 0, this pass has 1"),
])
def test_a_continued_pass_must_be_the_same_pass(change, words):
    with pytest.raises(BadInputError) as info:
        check_continuation(ROOT, make_manifest(), make_manifest(**change))
    assert one_line(info) == (f"teacher cache {ROOT} was begun with {words}: continue it with the same settings, "
                              "or write to a new folder")


def test_a_continued_pass_may_add_epochs_and_change_its_batch():
    check_continuation(ROOT, make_manifest(epochs=2, batch_size=4), make_manifest(epochs=5, batch_size=64))


def test_a_cache_of_other_replayed_draws_names_both_versions():
    """A change to how views, RandAugment or the mixing are drawn bumps views.DRAWS_VERSION: an older cache
    holds other images' outputs and must be refused, not read."""
    m = make_manifest(**{"replayed draws version": 1})
    with pytest.raises(BadInputError) as info:
        check(m, {**m.made_from, "replayed draws version": 2})
    assert one_line(info).endswith("was made with replayed draws version 1, this run has 2")
