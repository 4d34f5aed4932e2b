"""`made_from` from a built teacher and the data: the same teacher hashes alike however it was loaded."""
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import load_file

from pipeline.config import Config, apply
from pipeline.data.views import DRAWS_VERSION
from pipeline.models import create_network
from pipeline.teacher_cache.identity import data_identity, notes, resolved_aug_seed, teacher_identity
from pipeline.teacher_cache.manifest import listing_sha256, state_dict_sha256


def config(tiny_teacher, **teacher):
    return apply(Config(), {"teacher": {"arch": "resnet10t", "checkpoint": str(tiny_teacher), **teacher},
                            "train": {"seed": 7}}, "test")


def test_teacher_identity_is_its_weights_and_input_statistics(tiny_teacher):
    cfg = config(tiny_teacher)
    net = create_network(cfg.teacher, 10, cfg.data.mean, cfg.data.std)
    identity = teacher_identity(cfg, net)
    assert identity["teacher.arch"] == "resnet10t"
    assert identity["teacher weights"] == state_dict_sha256(load_file(str(tiny_teacher)))  # the file's tensors
    assert identity["teacher input mean"] == [0.485, 0.456, 0.406]  # resnet10t's pretrained_cfg (ImageNet)
    with torch.no_grad():
        net.model.fc.bias[3] += 1e-3
    assert teacher_identity(cfg, net)["teacher weights"] != identity["teacher weights"]
    other = config(tiny_teacher, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    moved = teacher_identity(other, create_network(other.teacher, 10, other.data.mean, other.data.std))
    assert moved["teacher input mean"] == [0.5] * 3 and moved["teacher input std"] == [0.25] * 3
    assert notes(cfg)["teacher weights"] == str(tiny_teacher)


def test_data_identity(tiny_teacher):
    cfg = config(tiny_teacher)
    names, labels = ["c0/a.jpg", "c1/b.jpg", "c1/c.jpg"], np.array([0, 1, 1])
    identity = data_identity(cfg, names, labels, 4)
    assert identity == {"train listing": f"3 samples, 4 classes, {listing_sha256(names, labels)}",
                        "data.aug_seed": 7, "data.image_size": 224, "data.min_area": 0.08,
                        "augment.mixup_alpha": 0.0, "augment.cutmix_alpha": 0.0, "augment.mix_prob": 1.0,
                        "augment.switch_prob": 0.5, "augment.randaug_ops": 0, "augment.randaug_magnitude": 9,
                        "replayed draws version": DRAWS_VERSION}
    mixed = config(tiny_teacher)
    mixed.augment.cutmix_alpha, mixed.augment.randaug_ops = 1.0, 2
    changed = data_identity(mixed, names, labels, 4)
    assert {k for k in identity if identity[k] != changed[k]} == {"augment.cutmix_alpha", "augment.randaug_ops"}
    assert resolved_aug_seed(cfg) == cfg.train.seed  # data.aug_seed -1 (or absent): train.seed
    for aug_seed, expected in ((-1, 7), (0, 0), (3, 3)):
        stand_in = SimpleNamespace(data=SimpleNamespace(aug_seed=aug_seed), train=SimpleNamespace(seed=7))
        assert resolved_aug_seed(stand_in) == expected
