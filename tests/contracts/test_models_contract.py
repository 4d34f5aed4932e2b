"""pipeline/models.py against timm itself, for architectures with a pre-logits layer (MobileNetV3's conv
head, ConvNeXt's norm + MLP-free head, ViT's token pooling + norm) at tiny sizes, not only ResNets:
`features` is what the classifier receives (captured by a hook on timm's own forward), the on-device
re-normalisation equals normalising by hand, weights survive every wrapper people save, and the exported
folder records the run's eval transform (crop_pct = image_size / val_resize, input size)."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.config import ModelConfig
from pipeline.errors import BadInputError
from pipeline.models import Network, create_network, fold_batchnorm, load_weights, save_timm_folder, save_weights

DATA_MEAN, DATA_STD = [0.2, 0.3, 0.4], [0.5, 0.25, 0.125]
ARCHS = {"mobilenetv3_small_050": 32, "test_convnext": 32, "test_vit": 32, "resnet10t": 32}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_features_are_the_classifier_input_and_renormalisation_is_exact(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=7).eval()
    net = Network(model, DATA_MEAN, DATA_STD).eval()
    x = torch.randn(3, 3, ARCHS[arch], ARCHS[arch])
    captured = []
    hook = model.get_classifier().register_forward_pre_hook(lambda _, args: captured.append(args[0].detach()))
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    pixels = x * torch.tensor(DATA_STD).view(1, 3, 1, 1) + torch.tensor(DATA_MEAN).view(1, 3, 1, 1)
    with torch.no_grad():
        expected_logits = model((pixels - mean) / std)  # timm's own forward on the model's statistics
        logits, features = net(x)
    hook.remove()
    assert net.renormalise
    assert features.shape == (3, net.feature_dim)  # the width methods build their heads with
    torch.testing.assert_close(features, captured[0].flatten(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-5)


def test_no_renormalisation_when_the_statistics_agree():
    model = timm.create_model("test_vit", num_classes=3).eval()
    net = Network(model, list(model.pretrained_cfg["mean"]), list(model.pretrained_cfg["std"])).eval()
    assert not net.renormalise
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], model(x))


def test_create_network_writes_the_weights_statistics_into_pretrained_cfg():
    net = create_network(ModelConfig(arch="resnet10t", mean=[0.5, 0.5, 0.5]), 4, DATA_MEAN, DATA_STD)
    assert tuple(net.model.pretrained_cfg["mean"]) == (0.5, 0.5, 0.5)
    assert tuple(net.model.pretrained_cfg["std"]) == tuple(timm.create_model("resnet10t").pretrained_cfg["std"])
    assert net.model.num_classes == 4
    with pytest.raises(BadInputError, match="unknown timm architecture 'resnet_nope'"):
        create_network(ModelConfig.model_construct(arch="resnet_nope"), 4, DATA_MEAN, DATA_STD)


@pytest.mark.parametrize("wrap", ["plain", "module.", "_orig_mod.module.", "state_dict", "model", "student"])
def test_load_weights_through_every_wrapper(tmp_path, wrap):
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", num_classes=5)
    state = source.state_dict()
    if wrap.endswith("."):
        state = {wrap + k: v for k, v in state.items()}
    elif wrap != "plain":
        state = {wrap: {"module." + k: v for k, v in state.items()}}
    path = tmp_path / "weights file.pt"
    torch.save(state, path)
    target = timm.create_model("resnet10t", num_classes=5)
    load_weights(target, path)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


def test_load_weights_mismatch_names_the_file_and_what_differs(tmp_path):
    state = timm.create_model("resnet10t", num_classes=5).state_dict()
    extra = {f"extra.{i}": torch.zeros(1) for i in range(7)}
    del state["fc.bias"]
    state["fc.weight"] = torch.zeros(3, 512)
    path = tmp_path / "bad.safetensors"
    save_file({**state, **extra}, str(path))
    with pytest.raises(BadInputError) as e:
        load_weights(timm.create_model("resnet10t", num_classes=5), path)
    message = str(e.value)
    assert str(path) in message and "missing keys: fc.bias" in message
    assert "unexpected keys: extra.0, extra.1, extra.2, extra.3, extra.4 ... (+2)" in message
    assert "fc.weight: file (3, 512) vs model (5, 512)" in message
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_weights(timm.create_model("resnet10t", num_classes=5), tmp_path / "absent.safetensors")


def test_exported_folder_records_this_runs_eval_transform(tmp_path):
    torch.manual_seed(2)
    net = create_network(ModelConfig(arch="mobilenetv3_small_050", mean=[0.1, 0.2, 0.3], std=[0.9, 0.8, 0.7]), 6,
                         DATA_MEAN, DATA_STD)
    out = tmp_path / "student folder"
    save_timm_folder(net.model, out, image_size=96, val_resize=120)
    config = json.loads((out / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    assert config["architecture"] == "mobilenetv3_small_050" and config["num_classes"] == 6
    assert cfg["input_size"] == [3, 96, 96] and cfg["crop_pct"] == pytest.approx(0.8)  # 96 / 120, not 120 / 96
    assert cfg["mean"] == [0.1, 0.2, 0.3] and cfg["std"] == [0.9, 0.8, 0.7] and cfg["crop_mode"] == "center"
    assert not {"url", "hf_hub_id", "license"} & set(cfg)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    data_cfg = timm.data.resolve_data_config(model=loaded)
    assert tuple(data_cfg["input_size"]) == (3, 96, 96) and data_cfg["crop_pct"] == pytest.approx(0.8)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.model.eval()(x))
    save_timm_folder(net.model, out, image_size=64, val_resize=64)  # replaced whole
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["crop_pct"] == 1.0
    assert not (tmp_path / "student folder.tmp").exists() and not (tmp_path / "student folder.old").exists()


def test_bare_weights_and_folded_teacher(tmp_path):
    torch.manual_seed(3)
    net = create_network(ModelConfig(arch="resnet10t"), 4, DATA_MEAN, DATA_STD).eval()
    path = tmp_path / "student.safetensors"
    save_weights(net.model, path)
    again = create_network(ModelConfig(arch="resnet10t", checkpoint=str(path)), 4, DATA_MEAN, DATA_STD).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))
        folded = fold_batchnorm(net)
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())


class RunsCode:
    """A pickled object that runs code when unpickled: a "checkpoint" must never be able to do that."""
    ran = []

    def __reduce__(self):
        return (RunsCode.ran.append, ("code ran",))


def read_error(path) -> str:
    with pytest.raises(BadInputError) as e:
        load_weights(timm.create_model("resnet10t", num_classes=5), path)
    return str(e.value)


def test_unreadable_files_say_which_kind_they_were_read_as_and_why(tmp_path):
    pickled = tmp_path / "weights.pt"
    torch.save({"fc.weight": RunsCode()}, pickled)
    message = read_error(pickled)
    assert RunsCode.ran == []  # refused before anything in it ran (torch.load weights_only)
    assert f"{pickled} ({pickled.stat().st_size} bytes) cannot be read as a torch state dict (torch.save): " in message
    reason = message.split("(torch.save): ", 1)[1].rsplit("; is it damaged or not a checkpoint?", 1)[0]
    assert reason.startswith("Unsupported global: GLOBAL")  # torch's core reason, not its preamble
    assert "Weights only load failed" not in reason and "Check the documentation" not in reason
    assert len(reason) == 200  # capped: torch's full explanation is longer
    damaged = tmp_path / "weights.safetensors"
    damaged.write_bytes(b"<html>not weights</html>")
    message = read_error(damaged)
    assert "cannot be read as a .safetensors file: " in message
    assert "header" in message.split(".safetensors file: ", 1)[1].lower()  # safetensors' reason, not just its type


def test_mismatch_lists_show_five_names_then_a_count(tmp_path):
    state = timm.create_model("resnet10t", num_classes=5).state_dict()
    missing = sorted(state)[:5]
    for k in missing:
        del state[k]
    path = tmp_path / "five missing.safetensors"
    save_file(state, str(path))
    message = read_error(path)
    assert message.endswith(f"missing keys: {', '.join(missing)}")  # exactly 5: all named, no count
    extra = {f"extra.{i}": torch.zeros(1) for i in range(6)}
    save_file({**timm.create_model("resnet10t", num_classes=5).state_dict(), **extra}, str(path))
    assert read_error(path).endswith("unexpected keys: extra.0, extra.1, extra.2, extra.3, extra.4 ... (+1)")


def test_only_missing_keys_is_still_a_mismatch_error(tmp_path):
    state = timm.create_model("resnet10t", num_classes=5).state_dict()
    del state["fc.bias"]
    path = tmp_path / "no bias.safetensors"
    save_file(state, str(path))
    assert read_error(path).endswith("does not match ResNet: missing keys: fc.bias")


def test_network_state_is_the_timm_weights_only_and_freeze_stops_gradients():
    model = timm.create_model("resnet10t", num_classes=3)
    net = Network(model, DATA_MEAN, DATA_STD)
    assert net.renormalise
    # a checkpoint or teacher file holds the weights, not the statistics' scale/shift of this run
    assert set(net.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    from pipeline.models import freeze
    frozen = freeze(net)
    assert frozen is net and not frozen.training and not any(p.requires_grad for p in net.parameters())


def test_renormalise_when_either_the_mean_or_the_std_differs():
    model = timm.create_model("resnet10t", num_classes=3)
    mean, std = list(model.pretrained_cfg["mean"]), list(model.pretrained_cfg["std"])
    assert not Network(model, mean, std).renormalise
    assert Network(model, mean, [s * 2 for s in std]).renormalise  # the same mean, another std
    assert Network(model, [m + 0.1 for m in mean], std).renormalise


def test_export_to_a_folder_creates_its_parents(tmp_path):
    net = create_network(ModelConfig(arch="resnet10t"), 4, DATA_MEAN, DATA_STD)
    out = tmp_path / "not yet" / "there" / "student"
    save_timm_folder(net.model, out, image_size=32, val_resize=40)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
