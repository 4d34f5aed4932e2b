"""Every config key's validation, generated from the pydantic schema (so keys added later are covered):
numbers at each bound and one step past it, each Literal choice and one that is not, non-empty strings,
list lengths and item bounds, every value a description documents ("0 = all") -- and each rejection is
one line that names the key. Beside the generated checks, the ranges and defaults that the docs state
(README, shared method notes, the meaning of each key) are pinned against the schema, so that a bound
or default changed in the schema alone is caught."""
from __future__ import annotations

import math
import re
import typing
from typing import Annotated, Literal

import annotated_types
import pytest

from pipeline.config import Config, ConfigError, apply, keys, nest

BASE = {"data.image_size": 1}  # so that data.val_resize's own bound (1) is not hidden by val_resize >= image_size


def unwrap(annotation):
    """(bare type, [metadata of every Annotated layer])."""
    metadata = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for e in extra:
            metadata += list(getattr(e, "metadata", [e]))
    return annotation, metadata


def numeric_bounds(metadata) -> list[tuple[str, float]]:
    out = []
    for m in metadata:
        for cls, attr in ((annotated_types.Ge, "ge"), (annotated_types.Gt, "gt"), (annotated_types.Le, "le"),
                          (annotated_types.Lt, "lt")):
            if isinstance(m, cls):
                out.append((attr, getattr(m, attr)))
    return out


def probes(kind: type, bounds) -> list[tuple[object, bool]]:
    """(value, accepted?) at each bound and one step past it: 1 for integers, the next float for floats."""
    out = []
    for attr, b in bounds:
        if kind is int:
            inside, outside = {"ge": (b, b - 1), "gt": (b + 1, b), "le": (b, b + 1), "lt": (b - 1, b)}[attr]
        else:
            up, down = math.nextafter(b, math.inf), math.nextafter(b, -math.inf)
            inside, outside = {"ge": (b, down), "gt": (up, b), "le": (b, up), "lt": (down, b)}[attr]
            inside, outside = float(inside), float(outside)
        out += [(inside, True), (outside, False)]
    return out


def cases(key: str, info) -> list[tuple[object, bool, str]]:
    """(value, accepted?, the key an error must name) for one schema key."""
    kind, metadata = unwrap(info.annotation)
    metadata += list(info.metadata)
    out = []
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        out += [(c, True, key) for c in choices] + [(choices[0] + "_not_a_choice", False, key)]
    elif typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        item_kind, item_meta = unwrap(item)
        lengths = [m for m in metadata if isinstance(m, (annotated_types.MinLen, annotated_types.MaxLen))]
        fixed = next((m.min_length for m in lengths if isinstance(m, annotated_types.MinLen)), None)
        sample = Config()
        for part in key.split("."):
            sample = getattr(sample, part)
        base = list(sample) or ([1] * 3 if fixed is None else [1] * fixed)
        for value, ok in probes(item_kind, numeric_bounds(item_meta)):
            # the probe in the first place; the rest kept valid (an increasing list stays increasing)
            trial = [value] + [max(v, value + 1) if item_kind is int else v for v in base[1:]]
            out.append((trial, ok, f"{key}[0]" if not ok else key))
        if fixed is not None:
            out += [(base[:fixed - 1], False, key), (base + base[:1], False, key)]
    elif kind in (int, float):
        out += [(v, ok, key) for v, ok in probes(kind, numeric_bounds(metadata))]
    elif kind is str:
        if any(isinstance(m, annotated_types.MinLen) and m.min_length for m in metadata):
            out += [("", False, key), ("x", True, key)]
    return out


ALL_KEYS = keys()
PARAMS = [(k, v, ok, named) for k, (_, info) in ALL_KEYS.items() for v, ok, named in cases(k, info)]


def test_the_generator_found_every_kind_of_rule():
    """The generator is not vacuous: bounds of every kind, choices, list items and lengths, string lengths."""
    attrs = {a for _, (_, info) in ALL_KEYS.items()
             for a, _ in numeric_bounds(unwrap(info.annotation)[1] + list(info.metadata))}
    assert attrs == {"ge", "gt", "le", "lt"}
    kinds = {type(v).__name__ for _, v, _, _ in PARAMS}
    assert {"int", "float", "str", "list"} <= kinds
    assert sum(not ok for *_, ok, _ in PARAMS) >= 60


def case_id(key, value) -> str:
    """Node ids without spaces or brackets, so that they can be passed back to pytest as they are."""
    return f"{key}={value!r}".replace(" ", "").replace("[", "(").replace("]", ")")


@pytest.mark.parametrize("key,value,accepted,named", PARAMS, ids=[case_id(p[0], p[1]) for p in PARAMS])
def test_bound_and_one_step_past(key, value, accepted, named):
    cfg = apply(Config(), nest(BASE), "base")
    if accepted:
        apply(cfg, nest({key: value}), "command line")
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        assert got == value and type(got) is type(value)
    else:
        with pytest.raises(ConfigError) as e:
            apply(cfg, nest({key: value}), "command line")
        message = str(e.value)
        assert "\n" not in message and message.startswith("command line: ")
        assert f"'{named}'" in message, message


def test_wrong_types_name_the_key():
    """Strict values: a string for a number, an integer for a boolean, a number for a string."""
    for key, (_, info) in ALL_KEYS.items():
        kind, _ = unwrap(info.annotation)
        wrong = {int: "8", float: "0.5", bool: 1, str: 3, list: "1,2"}.get(typing.get_origin(kind) or kind)
        if wrong is None:
            continue
        with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
            apply(Config(), nest({key: wrong}), "command line")


def documented_values(description: str) -> list[object]:
    """Values a description explains, e.g. '(0 = all)', '(-1 = data.per_class, 0 = all)', "('' = ...)"."""
    out = [int(v) for v in re.findall(r"(?:\(|, )(-?\d+) = ", description)]
    if re.search(r"\(''\s*=", description):
        out.append("")
    return out


def test_every_documented_value_is_accepted():
    found = 0
    for key, (_, info) in ALL_KEYS.items():
        for value in documented_values(info.description or ""):
            kind, _ = unwrap(info.annotation)
            value = float(value) if kind is float else value
            cfg = apply(Config(), nest({key: value}), "command line")
            got = cfg
            for part in key.split("."):
                got = getattr(got, part)
            assert got == value, key
            found += 1
    assert found >= 10  # per_class, val_per_class, steps_per_epoch, train_epochs, ... and the '' paths


# What the docs and the meaning of each key say (not read from the schema): (low, low included, high,
# high included); None = unbounded. A bound changed in the schema alone (ge=0 -> ge=1, lt -> le) fails here.
DOCUMENTED_RANGES = {
    "teacher.train_epochs": (0, True, None, None), "teacher.train_per_class": (-1, True, None, None),
    "teacher.train_batch_size": (0, True, None, None),
    "data.image_size": (1, True, None, None), "data.val_resize": (1, True, None, None),
    "data.min_area": (0, False, 1, True), "data.workers": (0, True, None, None),
    "data.per_class": (0, True, None, None), "data.val_per_class": (0, True, None, None),
    "data.hw_decoder_load": (0, True, 1, True),
    "train.epochs": (1, True, None, None), "train.lr": (0, False, None, None),
    "train.momentum": (0, True, 1, False), "train.weight_decay": (0, True, None, None),
    "train.decay_rate": (0, False, 1, True), "train.warmup_epochs": (0, True, None, None),
    "train.warmup_lr": (0, True, None, None), "train.min_lr": (0, True, None, None),
    "train.ce_weight": (0, True, None, None), "train.seed": (0, True, None, None),
    "train.steps_per_epoch": (0, True, None, None), "train.log_every": (1, True, None, None),
    "train.eval_every": (1, True, None, None), "train.keep_checkpoints": (1, True, None, None),
    "train.checkpoint_every": (0, True, None, None), "train.dist_timeout_s": (1, True, None, None),
    "kd.weight": (0, True, None, None), "kd.temperature": (0, False, None, None),
    "dkd.weight": (0, True, None, None), "dkd.temperature": (0, False, None, None),
    "icd.weight": (0, True, None, None), "icd.alpha": (0, True, None, None), "icd.dim": (1, True, None, None),
    "icd.max_scale": (0, False, None, None),
    "ccd.weight": (0, True, None, None), "ccd.theta": (0, True, None, None), "ccd.eps": (0, False, None, None),
    "slkd.alpha": (0, True, 1, True), "slkd.temperature": (0, False, None, None), "slkd.rho": (0, True, 1, True),
    "slkd.lam": (0, True, None, None), "slkd.eta": (0, True, None, None),
    "crd.weight": (0, True, None, None), "crd.dim": (1, True, None, None), "crd.nce_k": (1, True, None, None),
    "crd.nce_t": (0, False, None, None), "crd.momentum": (0, True, 1, True),
    # keys added since (the teacher cache, the recipes, the batch decisions of the coordination plan)
    "teacher.cache_topk": (1, True, None, None), "student.cache_topk": (1, True, None, None),  # K largest: K >= 1
    "student.train_epochs": (0, True, None, None), "student.train_per_class": (-1, True, None, None),
    "student.train_batch_size": (0, True, None, None),  # the model section is shared: the same as the teacher's
    "data.aug_seed": (-1, True, None, None),  # -1 = train.seed
    "train.batch_size": (1, True, None, None), "train.global_batch_size": (0, True, None, None),  # 0 = batch x procs
    "train.label_smoothing": (0, True, 1, False),  # eps = 1 would leave no label in the target
    "augment.mixup_alpha": (0, True, None, None), "augment.cutmix_alpha": (0, True, None, None),  # 0 = off
    "augment.mix_prob": (0, True, 1, True), "augment.switch_prob": (0, True, 1, True),  # probabilities
    "augment.randaug_magnitude": (0, True, 30, True),  # torchvision's RandAugment: 31 magnitude bins
    "ema.decay": (0, True, 1, False),  # 0 = off; a decay of 1 would never move the average
}


@pytest.mark.parametrize("key", sorted(DOCUMENTED_RANGES))
def test_documented_range(key):
    if key not in ALL_KEYS:
        pytest.skip(f"{key} is no longer a key")
    low, low_in, high, high_in = DOCUMENTED_RANGES[key]
    _, info = ALL_KEYS[key]
    kind, _ = unwrap(info.annotation)

    def accepted(value):
        try:
            wide = {"data.val_resize": 10**7} if key == "data.image_size" else {}  # val_resize >= image_size
            apply(Config(), nest({**BASE, **wide, key: kind(value)}), "test")
        except ConfigError:
            return False
        return True

    step = 1 if kind is int else 1e-9
    assert accepted(low) is low_in and accepted(low + step) and not accepted(low - step)
    if high is None:
        assert accepted(10**6 if kind is int else 1e6)
    else:
        assert accepted(high) is high_in and accepted(high - step) and not accepted(high + step)


# Defaults the docs state (shared method notes' ImageNet recipe, the methods' papers, the README).
DOCUMENTED_DEFAULTS = {
    "train.momentum": 0.9, "train.lr": 0.1, "train.weight_decay": 1e-4, "train.epochs": 100,
    "train.decay_epochs": [30, 60, 90], "train.decay_rate": 0.1, "train.sched": "step", "train.ce_weight": 1.0,
    "data.min_area": 0.08, "data.image_size": 224, "data.val_resize": 256, "data.per_class": 0,
    "data.val_per_class": 0, "data.mean": [0.485, 0.456, 0.406], "data.std": [0.229, 0.224, 0.225],
    "kd.temperature": 4.0, "kd.weight": 1.0, "dkd.temperature": 4.0,
    "icd.dim": 128, "icd.alpha": 0.5, "icd.max_scale": 10.0, "icd.negatives": "local", "icd.init_log_scale": 1.0,
    "icd.init_bias": 0.0, "ccd.weight": 0.0, "ccd.theta": 2.0, "ccd.eps": 1e-5,
    "slkd.alpha": 0.1, "slkd.rho": 0.5, "slkd.lam": 1.0, "slkd.eta": 3.0, "slkd.temperature": 4.0, "slkd.detach": True,
    "crd.dim": 128, "crd.nce_k": 16384, "crd.nce_t": 0.07, "crd.momentum": 0.5, "crd.weight": 0.8,
    "crd.shared_negatives": False, "method": "kd", "teacher.arch": "resnet34", "student.arch": "resnet18",
    "train.skip_nonfinite": False, "train.warmup_epochs": 0.0, "data.format": "folder",
    # README / the keys' meaning: nothing is trained, loaded or logged that the user did not ask for
    "teacher.checkpoint": "", "teacher.pretrained": False, "teacher.train_if_missing": False,
    "teacher.train_epochs": 0, "teacher.train_per_class": -1, "teacher.train_batch_size": 0, "teacher.mean": [],
    "teacher.std": [], "student.checkpoint": "", "student.train_if_missing": False, "data.root": "",
    "data.backend": "auto", "data.workers": 4, "data.hw_decoder_load": 0.65, "data.real_labels": "",
    "data.demo_dir": ".data/fashion_mnist_jpeg", "train.warmup_lr": 1e-5, "train.min_lr": 0.0,
    "train.precision": "auto", "train.compile": "auto", "train.compile_backend": "inductor", "train.seed": 0,
    "train.steps_per_epoch": 0, "train.log_every": 20, "train.eval_every": 1, "train.output_dir": "runs",
    "train.name": "", "train.keep_checkpoints": 3, "train.checkpoint_every": 0, "train.dist_timeout_s": 600,
    "train.baseline": False, "train.device": "auto", "dkd.weight": 1.0, "icd.weight": 1.0,
    # keys added since: off unless asked (README; the coordination plan's data.aug_seed -1 and
    # train.global_batch_size 0), docs/teacher-cache.md's K = 10, timm's mixing probabilities (--mixup-prob 1.0,
    # --mixup-switch-prob 0.5) and its ImageNet RandAugment magnitude (rand-m9)
    "teacher.cache": "", "teacher.cache_topk": 10, "teacher.cache_features": False, "data.aug_seed": -1,
    "train.global_batch_size": 0, "train.label_smoothing": 0.0, "train.tf32": False,
    "augment.mixup_alpha": 0.0, "augment.cutmix_alpha": 0.0, "augment.mix_prob": 1.0, "augment.switch_prob": 0.5,
    "augment.randaug_ops": 0, "augment.randaug_magnitude": 9, "ema.decay": 0.0, "ema.warmup": False,
    "ema.export": False,
}


def test_documented_defaults():
    cfg = Config()
    for key, value in DOCUMENTED_DEFAULTS.items():
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        assert got == value, key


def test_several_problems_say_how_many_more():
    with pytest.raises(ConfigError) as one:
        apply(Config(), {"kd": {"temperature": 0}}, "cli")
    assert "more problems" not in str(one.value)
    with pytest.raises(ConfigError) as three:
        apply(Config(), {"kd": {"temperature": 0, "weight": -1}, "train": {"epochs": 0}}, "cli")
    assert str(three.value).endswith(" (and 2 more problems)")
    assert str(three.value).startswith("cli: 'train.epochs' must be")  # the first in the schema's order


def test_help_shows_each_keys_type_and_range():
    """--help's metavar, written from the documented ranges (not read back from the schema)."""
    from pipeline.config import build_parser

    metavars = {a.dest: a.metavar for a in build_parser()._actions}
    assert metavars["train.lr"] == "FLOAT(>0)" and metavars["train.momentum"] == "FLOAT(>=0,<1)"
    assert metavars["crd.nce_k"] == "INT(>=1)" and metavars["data.min_area"] == "FLOAT(>0,<=1)"
    assert metavars["train.output_dir"] == "STR(non-empty)" and metavars["train.name"] == "STR"
    assert metavars["data.mean"] == "[FLOAT(>=0,<=1), ...](3 items)" and metavars["data.std"] == "[FLOAT(>0), ...](3 items)"
    assert metavars["train.decay_epochs"] == "[INT(>=1), ...]" and metavars["data.backend"] == "{dali,torch,auto}"
    assert metavars["train.skip_nonfinite"] == "BOOL" and metavars["teacher.train_per_class"] == "INT(>=-1)"


def test_rgb_statistics_are_three_numbers():
    """data.mean/std: exactly 3 (R, G, B); teacher/student mean/std: 3 or [] (the architecture's own)."""
    for key in ("data.mean", "data.std", "teacher.mean", "student.std"):
        for length, ok in ((2, False), (3, True), (4, False), (0, key.split(".")[0] != "data")):
            values = [0.5] * length
            if ok:
                assert getattr(getattr(apply(Config(), nest({key: values}), "t"), key.split(".")[0]),
                               key.split(".")[1]) == values
            else:
                with pytest.raises(ConfigError, match=re.escape(f"'{key}' must be")):
                    apply(Config(), nest({key: values}), "t")
    # items: means on 0..1 pixels (both ends allowed), stds above 0
    for key, ok, bad in (("data.mean", [0.0, 1.0, 0.5], [-0.01, 1.01]), ("teacher.mean", [0.0, 1.0, 0.5], [-0.01, 1.01]),
                         ("data.std", [1e-9, 5.0, 0.5], [0.0, -1.0]), ("student.std", [1e-9, 5.0, 0.5], [0.0])):
        apply(Config(), nest({key: ok}), "t")
        for value in bad:
            with pytest.raises(ConfigError, match=re.escape(f"'{key}[1]' must be")):
                apply(Config(), nest({key: [0.5, value, 0.5]}), "t")


def test_flag_text_of_string_keys_is_kept_as_typed():
    """`--teacher.arch 1e5` reaches the architecture check as the text '1e5' (YAML would make it a number)."""
    from pipeline.config import parse_args

    with pytest.raises(ConfigError, match=r"'teacher.arch' must be a timm architecture .*got '1e5'"):
        parse_args(["--teacher.arch", "1e5"])
    cfg, _ = parse_args(["--train.name", "1e5", "--train.epochs", "3"])
    assert cfg.train.name == "1e5" and cfg.train.epochs == 3


def test_an_unset_aug_seed_follows_train_seed():
    """data.aug_seed -1 (unset) means train.seed; a set one, 0 included, is its own."""
    from pipeline.teacher_cache.identity import resolved_aug_seed

    assert resolved_aug_seed(apply(Config(), {"train": {"seed": 5}}, "test")) == 5
    assert resolved_aug_seed(apply(Config(), {"train": {"seed": 5}, "data": {"aug_seed": 0}}, "test")) == 0


def test_the_ema_export_is_asked_for_not_implied_by_the_decay():
    """README: the EMA is `exported with ema.export`; a run that only sets ema.decay evaluates and saves it."""
    cfg = apply(Config(), {"ema": {"decay": 0.99}}, "test")
    assert cfg.ema.decay == 0.99 and cfg.ema.export is False
