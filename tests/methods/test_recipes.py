"""The papers' ImageNet recipes (configs/imagenet/r34_r18_{icd_kd,dccd,slkd}.yaml) load and say what the notes
say; each fast recipe (configs/imagenet/fast/) is its paper recipe at 256 images per GPU with warm-up."""
import pytest

from pipeline.batch import plan_batch
from pipeline.config import CONFIG_DIR, parse_args, to_dict
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
    assert (t.epochs, t.global_batch_size, t.lr, t.momentum, t.weight_decay) == (100, 256, 0.1, 0.9, 1e-4)
    assert plan_batch(t, 8).per_process == 32 and plan_batch(t, 8).lr == 0.1  # the papers' 256 on 8 GPUs
    assert (t.sched, t.decay_epochs, t.decay_rate) == ("step", [30, 60, 90], 0.1)
    assert (cfg.data.image_size, cfg.data.val_resize, cfg.data.min_area) == (224, 256, 0.08)
    assert cfg.kd.temperature == cfg.dkd.temperature == cfg.slkd.temperature == 4.0
    assert (cfg.icd.weight, cfg.icd.alpha, cfg.icd.negatives) == (1.0, 0.5, "local")
    assert (cfg.ccd.weight, cfg.ccd.theta) == (0.0, 2.0)  # 0: beta = 25.6 / d_t
    assert (cfg.slkd.alpha, cfg.slkd.lam, cfg.slkd.eta, cfg.slkd.rho, cfg.slkd.detach) == (0.1, 1.0, 3.0, 0.5, True)


PAPERS = sorted(p.name for p in (CONFIG_DIR / "imagenet").glob("*.yaml"))


def test_every_paper_recipe_has_a_fast_one():
    assert PAPERS and sorted(p.name for p in (CONFIG_DIR / "imagenet" / "fast").glob("*.yaml")) == PAPERS


@pytest.mark.parametrize("name", PAPERS)
def test_fast_recipe_is_its_paper_recipe_at_256_per_gpu_with_warm_up(name):
    paper, _ = parse_args(["--config", str(CONFIG_DIR / "imagenet" / name)])
    fast, _ = parse_args(["--config", str(CONFIG_DIR / "imagenet" / "fast" / name)])
    t = fast.train
    assert (t.batch_size, t.global_batch_size, t.warmup_epochs, t.warmup_lr) == (256, 0, 5.0, 0.1)
    one_node = plan_batch(t, 8)  # linear scaling: 0.1 per 256 images of 8 x 256
    assert (one_node.per_process, one_node.global_batch, one_node.lr) == (256, 2048, pytest.approx(0.8))
    differs = {"batch_size", "global_batch_size", "warmup_epochs", "warmup_lr"}
    a, b = to_dict(paper), to_dict(fast)
    assert {k: v for k, v in a["train"].items() if k not in differs} == {k: v for k, v in b["train"].items()
                                                                         if k not in differs}
    assert {k: v for k, v in a.items() if k != "train"} == {k: v for k, v in b.items() if k != "train"}
    text = (CONFIG_DIR / "imagenet" / "fast" / name).read_text()
    assert "NOT MEASURED HERE" in text and "--benchmark-batches" in text and "Goyal et al." in text


@pytest.mark.parametrize("name", ["r34_r18_funmatch.yaml", "r50_mbv1_funmatch.yaml"])
def test_function_matching_recipe_is_the_papers_setting_where_we_follow_it(name):
    """Beyer et al. (CVPR 2022, big_vision's bit_i1k.py): KL at T = 1 without labels, mixup Beta(1, 1) on
    every image, inception crop of 5-100%, batch 4,096, cosine, 1,200 epochs; the pair is the papers' own."""
    cfg, _ = parse_args(["--config", str(CONFIG_DIR / "imagenet" / name)])
    base, _ = parse_args(["--config", str(CONFIG_DIR / "imagenet" / name.replace("_funmatch", ""))])
    assert parse_method(cfg.method) == ["kd"] and (cfg.kd.temperature, cfg.kd.weight, cfg.train.ce_weight) == (1.0, 1.0, 0.0)
    a = cfg.augment
    assert (a.mixup_alpha, a.mix_prob, a.cutmix_alpha, a.randaug_ops) == (1.0, 1.0, 0.0, 0)
    assert (cfg.teacher.arch, cfg.student.arch) == (base.teacher.arch, base.student.arch)
    t = cfg.train
    assert (t.epochs, t.sched, t.min_lr, t.global_batch_size, t.warmup_epochs) == (1200, "cosine", 0.0, 4096, 5.0)
    assert plan_batch(t, 8).lr == pytest.approx(1.6)  # 0.1 per 256 images
    assert (cfg.data.min_area, cfg.data.image_size) == (0.05, 224) and cfg.ema.decay == 0.0
    header = (CONFIG_DIR / "imagenet" / name).read_text().split("\nmethod:")[0]
    for fact in ("Beyer et al.", "bit_i1k.py", "Beta(1, 1)", "4,096", "1,200 epochs", "82.8%", "Where this recipe differs"):
        assert fact in header, fact
