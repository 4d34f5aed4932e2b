"""The papers' ImageNet recipes (configs/imagenet/r34_r18_{icd_kd,dccd,slkd}.yaml) load and say what the notes say."""
import pytest

from pipeline.config import CONFIG_DIR, parse_args
from pipeline.methods import parse_method

RECIPES = {"r34_r18_icd_kd.yaml": ["icd", "kd"], "r34_r18_dccd.yaml": ["kd", "dkd", "ccd"],
           "r34_r18_slkd.yaml": ["slkd"]}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe(name):
    cfg, _ = parse_args(["--config", str(CONFIG_DIR / "imagenet" / name)])
    assert parse_method(cfg.method) == RECIPES[name]
    assert (cfg.teacher.arch, cfg.student.arch) == ("resnet34", "resnet18")
    assert cfg.teacher.checkpoint and not cfg.teacher.train_if_missing and cfg.data.root
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay) == (100, 256, 0.1, 0.9, 1e-4)
    assert (t.sched, t.decay_epochs, t.decay_rate) == ("step", [30, 60, 90], 0.1)
    assert (cfg.data.image_size, cfg.data.val_resize, cfg.data.min_area) == (224, 256, 0.08)
    assert cfg.kd.temperature == cfg.dkd.temperature == cfg.slkd.temperature == 4.0
    assert (cfg.icd.weight, cfg.icd.alpha, cfg.icd.negatives) == (1.0, 0.5, "local")
    assert (cfg.ccd.weight, cfg.ccd.theta) == (0.0, 2.0)  # 0: beta = 25.6 / d_t
    assert (cfg.slkd.alpha, cfg.slkd.lam, cfg.slkd.eta, cfg.slkd.rho, cfg.slkd.detach) == (0.1, 1.0, 3.0, 0.5, True)
