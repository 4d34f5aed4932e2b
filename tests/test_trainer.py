"""Single-process trainer checks: the compiled step, teacher loading errors, the demo teacher path."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.config import Config, apply, load_yaml, parse_args
from pipeline.models import create_network, load_weights
from pipeline.trainer import Trainer
from tests.conftest import tiny_run_args


def make_trainer(tmp_path, teacher, **overrides):
    cfg, args = parse_args(tiny_run_args(tmp_path / "runs", teacher, **overrides))
    return Trainer(cfg, resume=args.resume)


def test_compiled_step_trains_and_matches_eager_loss(tmp_path, tiny_teacher, demo_root):
    """torch.compile of the student step and the teacher (aot_eager: the plumbing, cheaply on CPU)."""
    overrides = {"method": "kd", "train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 8}
    eager = make_trainer(tmp_path / "eager", tiny_teacher, **overrides)
    compiled = make_trainer(tmp_path / "compiled", tiny_teacher, **overrides, **{"train.compile": "on",
                                                                                "train.compile_backend": "aot_eager"})
    assert compiled.step_fn is not compiled.model and eager.step_fn is eager.model
    batch = next(iter(compiled.train_loader))
    terms_compiled = compiled.train_step(batch)
    terms_eager = eager.train_step(batch)
    assert set(terms_compiled) == {"ce", "kd"}
    for name in terms_eager:  # same seed, same initial weights, same batch
        torch.testing.assert_close(terms_compiled[name], terms_eager[name], rtol=1e-4, atol=1e-5)
    summary = compiled.fit()
    assert summary["val_images"] == 30


def test_teacher_checkpoint_missing_is_an_error_naming_the_file(tmp_path, demo_root):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nowhere.safetensors"):
        make_trainer(tmp_path, tmp_path / "nowhere.safetensors", method="kd")


def test_teacher_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=10).state_dict(), str(path))
    model = timm.create_model("resnet10t", num_classes=10)
    with pytest.raises(ValueError, match=r"r18\.safetensors does not match ResNet: .*(missing|unexpected|shape)"):
        load_weights(model, path)
    wrong_classes = tmp_path / "r10t_1000.pt"
    torch.save({"state_dict": timm.create_model("resnet10t", num_classes=1000).state_dict()}, wrong_classes)
    with pytest.raises(ValueError, match=r"shape mismatches: fc.weight: file \(1000, 512\) vs model \(10, 512\)"):
        load_weights(model, wrong_classes)


def test_torch_state_dict_with_wrapper_prefixes_loads(tmp_path):
    """Checkpoints saved from DDP / torch.compile wrappers ('module.', '_orig_mod.') load as-is."""
    source = timm.create_model("resnet10t", num_classes=10)
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}}, path)
    from pipeline.config import ModelConfig

    net = create_network(ModelConfig(arch="resnet10t", checkpoint=str(path)), 10, [0.5] * 3, [0.25] * 3)
    for k, v in source.state_dict().items():
        assert torch.equal(net.model.state_dict()[k], v)
    assert net.renormalise  # data statistics differ from timm's ImageNet ones: re-normalised on device
    x = torch.rand(2, 3, 16, 16)
    expected = source.eval()((x * 0.25 + 0.5 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                             / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    torch.testing.assert_close(net.eval()(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_features_are_the_classifier_input(tmp_path):
    from pipeline.config import ModelConfig

    net = create_network(ModelConfig(arch="resnet10t"), 7, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    logits, features = net(torch.randn(3, 3, 32, 32))
    assert features.shape == (3, net.feature_dim) and logits.shape == (3, 7)
    torch.testing.assert_close(logits, features @ net.model.fc.weight.T + net.model.fc.bias)


def test_method_that_needs_a_teacher_without_one_is_an_error(tmp_path, demo_root):
    cfg, _ = parse_args(tiny_run_args(tmp_path, "", method="kd"))
    with pytest.raises(ValueError, match="needs a teacher: set teacher.checkpoint"):
        Trainer(cfg)


def test_metrics_file_has_train_and_eval_lines(tmp_path, tiny_teacher, demo_root):
    # A run name YAML would read as a number: the run's config.yaml must still give back this config.
    trainer = make_trainer(tmp_path, tiny_teacher, method="none",
                           **{"train.epochs": 1, "train.steps_per_epoch": 2, "train.name": "1e5"})
    trainer.fit()
    assert trainer.run_dir.name == "1e5"
    assert apply(Config(), load_yaml(trainer.run_dir / "config.yaml"), "config.yaml") == trainer.cfg
    lines = [json.loads(x) for x in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["kind"] for m in lines] == ["train", "train", "eval"]
    assert {"images_per_s", "lr", "loss/ce"} <= set(lines[0])
    assert "teacher_top1" not in lines[-1]  # `none` builds no teacher
    assert (trainer.run_dir / "student.safetensors").is_file()
    assert timm.create_model(f"local-dir:{trainer.run_dir / 'student'}", pretrained=True).num_classes == 10


def test_eval_every_evaluates_on_its_epochs_and_after_the_last(tmp_path, tiny_teacher, demo_root):
    trainer = make_trainer(tmp_path, tiny_teacher, method="kd", **{
        "train.epochs": 5, "train.steps_per_epoch": 1, "train.eval_every": 2})
    summary = trainer.fit()
    lines = [json.loads(x) for x in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines if m["kind"] == "eval"] == [2, 4, 5]
    assert summary["student_top1"] == lines[-1]["student_top1"]
    assert all(m.get("teacher_top1") is not None and m.get("teacher_top5") is not None
               for m in lines if m["kind"] == "eval")


LOADER_WORKER_GROUPS = """
import os, sys
import psutil, torch
from pipeline.data.folder import list_image_folder
from pipeline.data.torch_loader import TorchLoader
loader = TorchLoader(list_image_folder(sys.argv[1], 4), train=True, batch_size=8, views=1, image_size=28,
                     val_resize=32, min_area=0.35, mean=[0.5] * 3, std=[0.5] * 3, workers=1, seed=0, rank=0,
                     world=1, device=torch.device("cpu"))
before = {p.pid for p in psutil.Process().children()}
next(iter(loader))
workers = [p for p in psutil.Process().children() if p.pid not in before]
print("trainer", os.getpgid(0), "workers", *[os.getpgid(w.pid) for w in workers])
"""


def test_loader_workers_leave_the_trainer_process_group(demo_root):
    """torchrun signals the trainer's process group before preemption; a loader worker killed by that
    signal would crash the trainer before it checkpoints, so workers live in a group of their own.
    (In a fresh interpreter: forking a worker from a pytest worker that has run hundreds of tests can fail
    with ENOMEM under the kernel's overcommit heuristic, which says nothing about the loader.)"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LOADER_WORKER_GROUPS, str(demo_root / "train")], check=True,
                         capture_output=True, text=True, timeout=300).stdout.split()
    trainer_group, workers = out[1], out[3:]
    assert out[0] == "trainer" and workers, f"no loader worker process: {out}"
    assert all(group != trainer_group for group in workers), out


@pytest.mark.parametrize("arch", ["resnet10t", "resnet18"])
def test_teacher_with_batchnorm_folded_gives_the_same_outputs(arch):
    """The step's teacher: BatchNorm folded into the convolutions, equal to the eval network up to fp32
    rounding (both measured against the unfolded network in float64); the evaluated teacher keeps its BN."""
    from pipeline.config import ModelConfig
    from pipeline.models import fold_batchnorm, freeze

    torch.manual_seed(0)
    net = freeze(create_network(ModelConfig(arch=arch), 10, [0.5] * 3, [0.25] * 3))
    for m in net.modules():  # non-trivial statistics, or folding would be the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(4, 3, 32, 32)
    import copy
    exact = copy.deepcopy(net).double()(x.double())
    for got, ref in zip(folded(x), exact):
        assert (got.double() - ref).norm() / ref.norm() < 1e-5
