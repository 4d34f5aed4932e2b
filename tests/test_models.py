"""Networks: teacher/student mean/std overrides of timm's pretrained_cfg, and the timm-native student folder."""
import json

import timm
import torch

from pipeline.config import ModelConfig
from pipeline.models import create_network, save_timm_folder

DATA_MEAN, DATA_STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]  # the loader's normalisation in these tests
TIMM_MEAN, TIMM_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # resnet10t's pretrained_cfg


def expected_shift_scale(model_mean, model_std):
    """x_model = (x_data * data_std + data_mean - model_mean) / model_std = x_data * scale + shift, in float64."""
    dm, ds = torch.tensor(DATA_MEAN, dtype=torch.float64), torch.tensor(DATA_STD, dtype=torch.float64)
    mm, ms = torch.tensor(model_mean, dtype=torch.float64), torch.tensor(model_std, dtype=torch.float64)
    return ds / ms, (dm - mm) / ms


def test_mean_std_override_changes_the_renormalisation():
    torch.manual_seed(0)
    default = create_network(ModelConfig(arch="resnet10t"), 10, DATA_MEAN, DATA_STD).eval()
    mean, std = [0.3, 0.4, 0.6], [0.2, 0.3, 0.5]
    override = create_network(ModelConfig(arch="resnet10t", mean=mean, std=std), 10, DATA_MEAN, DATA_STD).eval()
    override.model.load_state_dict(default.model.state_dict())
    for net, (m, s) in ((default, (TIMM_MEAN, TIMM_STD)), (override, (mean, std))):
        scale, shift = expected_shift_scale(m, s)
        assert net.renormalise
        torch.testing.assert_close(net.scale.view(3).double(), scale, rtol=1e-6, atol=0)
        torch.testing.assert_close(net.shift.view(3).double(), shift, rtol=1e-6, atol=1e-7)
    x = torch.rand(2, 3, 32, 32)
    scale, shift = expected_shift_scale(mean, std)
    expected = override.model((x.double() * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)).float())
    torch.testing.assert_close(override(x)[0], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(override(x)[0], default(x)[0], atol=1e-3)  # the override reached the forward
    # weights trained on the loader's own statistics: no renormalisation at all
    same = create_network(ModelConfig(arch="resnet10t", mean=DATA_MEAN, std=DATA_STD), 10, DATA_MEAN, DATA_STD)
    assert not same.renormalise and same.model.pretrained_cfg["mean"] == tuple(DATA_MEAN)


def test_exported_student_folder_loads_in_timm_with_identical_logits(tmp_path):
    torch.manual_seed(1)
    net = create_network(ModelConfig(arch="resnet10t", mean=[0.3, 0.4, 0.6], std=[0.2, 0.3, 0.5]), 7,
                         DATA_MEAN, DATA_STD)
    student = net.model.eval()
    out = tmp_path / "student"
    save_timm_folder(student, out, image_size=28, val_resize=32)
    save_timm_folder(student, out, image_size=28, val_resize=32)  # replaces the folder whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]  # no .tmp / .old left behind
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 7
    cfg = config["pretrained_cfg"]
    assert cfg["mean"] == [0.3, 0.4, 0.6] and cfg["std"] == [0.2, 0.3, 0.5]  # what the student was trained with
    assert cfg["input_size"] == [3, 28, 28] and cfg["crop_pct"] == 28 / 32 and "hf_hub_id" not in cfg
    assert "library_name: timm" in (out / "README.md").read_text()
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))
    assert loaded.pretrained_cfg["mean"] == [0.3, 0.4, 0.6]
    data_config = timm.data.resolve_data_config(model=loaded)  # timm's eval transform: the run's own
    assert tuple(data_config["input_size"]) == (3, 28, 28) and data_config["crop_pct"] == 28 / 32
