"""The folder reader with awkward names and every `per_class` value, and the student-alone baseline's cache
key (what decides the result, and nothing else) and side-by-side text, against hand counts."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.baseline import IGNORED_TRAIN_KEYS, baseline_cache_path, baseline_config, baseline_key, what_distillation_buys
from pipeline.config import Config, apply, nest
from pipeline.data.folder import list_image_folder
from pipeline.errors import MissingInputError


def make_tree(root: Path, layout: dict[str, list[str]]):
    for cls, files in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / cls / f).write_bytes(b"x")


LAYOUT = {  # class folders in torchvision's order: by code point (upper case first), spaces allowed
    "b class": ["z 1.JPEG", "a.jpeg", "m.png", "notes.txt", "c.Jpg"],
    "Apple": ["2.webp", "10.bmp", "1.PPM"],
    "été": ["x.tif", "y.tiff", "w.pgm"],
}


@pytest.mark.parametrize("per_class", [0, 1, 2, 4])
def test_folder_listing_order_extensions_and_per_class(tmp_path, per_class):
    root = tmp_path / "split with spaces"
    make_tree(root, LAYOUT)
    (root / "loose.jpg").write_bytes(b"x")  # a file at the top is no class
    listing = list_image_folder(root, per_class)
    assert listing.classes == ["Apple", "b class", "été"]
    expected = {"Apple": ["1.PPM", "10.bmp", "2.webp"], "b class": ["a.jpeg", "c.Jpg", "m.png", "z 1.JPEG"],
                "été": ["w.pgm", "x.tif", "y.tiff"]}  # sorted within a class, .txt left out
    files, labels = [], []
    for label, cls in enumerate(listing.classes):
        kept = expected[cls] if per_class == 0 else expected[cls][:per_class]  # 0 = all
        files += [f"{cls}/{f}" for f in kept]
        labels += [label] * len(kept)
    assert listing.files == files and listing.labels == labels
    assert listing.sample_labels().tolist() == labels and len(listing) == len(files) and listing.num_classes == 3
    assert listing.load(len(files) - 1) == (root / files[-1], labels[-1], len(files) - 1)
    assert listing.describe(0) == str(root / files[0])


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(MissingInputError, match="dataset folder not found: .*absent"):
        list_image_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match="no class folders in .*empty"):
        list_image_folder(tmp_path / "empty")
    make_tree(tmp_path / "textonly", {"a": ["readme.txt"]})
    with pytest.raises(MissingInputError, match="no image files under .*textonly"):
        list_image_folder(tmp_path / "textonly")


def cfg_with(**dotted) -> Config:
    return apply(Config(), nest({"teacher.checkpoint": "/w/teachers/t.safetensors", "student.arch": "resnet10t",
                                 **dotted}), "test")


def test_baseline_key_depends_on_what_decides_the_result_only():
    base = baseline_key(cfg_with(), 1)
    same = {"train.output_dir": "elsewhere", "train.name": "x", "train.log_every": 7, "train.eval_every": 3,
            "train.keep_checkpoints": 9, "train.checkpoint_every": 5, "train.dist_timeout_s": 60,
            "train.skip_nonfinite": True, "train.baseline": True, "data.workers": 1, "method": "icd+kd",
            "kd.temperature": 2.0, "teacher.arch": "resnet18"}
    assert set(IGNORED_TRAIN_KEYS) == {k.split(".")[1] for k in same if k.startswith("train.")}
    for key, value in same.items():
        assert baseline_key(cfg_with(**{key: value}), 1) == base, key
    different = {"train.seed": 1, "train.lr": 0.2, "train.epochs": 3, "train.ce_weight": 0.5, "data.per_class": 5,
                 "data.image_size": 200, "student.arch": "resnet18", "train.sched": "cosine"}
    keys_seen = {baseline_key(cfg_with(**{k: v}), 1) for k, v in different.items()}
    assert base not in keys_seen and len(keys_seen) == len(different)
    # The batch enters as what the processes get: per process and global, however the config says it.
    per_process = cfg_with(**{"train.batch_size": 32})
    assert baseline_key(per_process, 1) == baseline_key(cfg_with(**{"train.global_batch_size": 32}), 1)
    assert baseline_key(per_process, 2) != baseline_key(per_process, 1)  # global 64, not 32
    assert baseline_key(per_process, 2) == baseline_key(cfg_with(**{"train.global_batch_size": 64}), 2)
    assert baseline_key(cfg_with(**{"train.global_batch_size": 64}), 2) != baseline_key(
        cfg_with(**{"train.global_batch_size": 64}), 1)  # 32 per process, not 64


def test_baseline_config_and_cache_path():
    cfg = cfg_with(method="icd+kd", **{"train.baseline": True})
    alone = baseline_config(cfg)
    assert alone.method == "none" and alone.train.baseline is False
    assert cfg.method == "icd+kd" and cfg.train.baseline is True  # the caller's config untouched
    path = baseline_cache_path(cfg)
    assert path == Path("/w/teachers") / f"student-alone-resnet10t-{baseline_key(cfg, 1)}.json"
    no_teacher = apply(Config(), nest({"teacher.checkpoint": "", "train.output_dir": "/r"}), "t")
    assert baseline_cache_path(no_teacher).parent == Path("/r")


def test_what_distillation_buys_hand_worked():
    cfg = cfg_with(method="dkd+kd", **{"teacher.arch": "resnet34"})
    alone = {"student_top1": 61.25, "student_top5": 84.5}
    distilled = {"student_top1": 64.0, "student_top5": 86.75, "teacher_top1": 73.5, "teacher_top5": 91.0,
                 "val_images": 123}
    lines = what_distillation_buys(cfg, alone, distilled).splitlines()
    width = len("student resnet10t distilled (--method dkd+kd)")
    assert lines == [
        f"{'network':<{width}}  top-1 / top-5 (%)",
        f"{'teacher resnet34':<{width}}  73.50 / 91.00",
        f"{'student resnet10t alone (--method none)':<{width}}  61.25 / 84.50",
        "student resnet10t distilled (--method dkd+kd)  64.00 / 86.75",
        "distillation buys +2.75 points of top-1 over the student alone (123 validation images, one seed)",
    ]
    no_teacher_top5 = what_distillation_buys(cfg, {"student_top1": 70.0}, {"student_top1": 69.5, "teacher_top1": 80.0})
    assert "80.00 / -" in no_teacher_top5 and "70.00 / -" in no_teacher_top5 and "buys -0.50 points" in no_teacher_top5
    assert "(? validation images" in no_teacher_top5
