"""timm teacher and student: one forward gives the logits and the pooled pre-logit features."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import timm
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import BadInputError, MissingInputError

log = logging.getLogger(__name__)


class Network(nn.Module):
    """A timm classifier returning (logits, features); `features` is the classifier's input.

    The loader normalises with the data's mean/std once; a network whose own statistics differ
    (timm's pretrained_cfg, or `teacher.mean/std` / `student.mean/std`, which create_network writes into
    the pretrained_cfg) gets an on-device affine re-normalisation instead of a second decode.
    """

    def __init__(self, model: nn.Module, data_mean, data_std):
        super().__init__()
        self.model = model
        model_mean = torch.tensor(model.pretrained_cfg.get("mean", data_mean), dtype=torch.float32)
        model_std = torch.tensor(model.pretrained_cfg.get("std", data_std), dtype=torch.float32)
        data_mean, data_std = torch.tensor(data_mean, dtype=torch.float32), torch.tensor(data_std, dtype=torch.float32)
        self.renormalise = not (torch.allclose(model_mean, data_mean) and torch.allclose(model_std, data_std))
        # x_model = (x_data * data_std + data_mean - model_mean) / model_std
        self.register_buffer("scale", (data_std / model_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((data_mean - model_mean) / model_std).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return getattr(self.model, "head_hidden_size", None) or self.model.num_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.renormalise:
            x = x * self.scale + self.shift
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(features), features


def _clean_state_dict(state: dict) -> dict:
    for key in ("state_dict", "model", "student"):  # common wrappers of saved checkpoints
        if key in state and isinstance(state[key], dict):
            state = state[key]
    prefixes = ("module.", "_orig_mod.", "model.")
    out = {}
    for k, v in state.items():
        while k.startswith(prefixes):  # in any order: torch.compile(DDP(m)) saves '_orig_mod.module.'
            k = k[len(next(p for p in prefixes if k.startswith(p))):]
        out[k] = v
    return out


def read_state_dict(path: Path) -> dict:
    """A .safetensors file or a torch state dict; anything else (a damaged file, an HTML page saved by a
    failed download, a pickle that is not weights) is one error naming the file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (safetensors, pickle, zip and torch each raise their own kind)
        text = str(e).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]  # torch's core
        reason = " ".join(text.split()) or type(e).__name__
        kind = "a .safetensors file" if path.suffix == ".safetensors" else "a torch state dict (torch.save)"
        raise BadInputError(f"{path} ({path.stat().st_size} bytes) cannot be read as {kind}: {reason[:200]}; "
                            "is it damaged or not a checkpoint?") from None
    if not isinstance(state, dict):
        raise BadInputError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a .safetensors file or a torch state dict into `model`; errors name the file and the mismatch."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint not found: {path} (check teacher.checkpoint / student.checkpoint)")
    state = read_state_dict(path)
    state = _clean_state_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:5]) + (f" ... (+{len(items) - 5})" if len(items) > 5 else "")
        problems = [f"missing keys: {few(missing)}" if missing else "",
                    f"unexpected keys: {few(unexpected)}" if unexpected else "",
                    f"shape mismatches: {few(shapes)}" if shapes else ""]
        raise BadInputError(f"{path} does not match {type(model).__name__}: " + "; ".join(p for p in problems if p))
    model.load_state_dict(state)


def create_network(cfg: ModelConfig, num_classes: int, data_mean, data_std) -> Network:
    try:
        model = timm.create_model(cfg.arch, pretrained=cfg.pretrained, num_classes=num_classes)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise BadInputError(f"unknown timm architecture '{cfg.arch}' (see timm.list_models())") from e
        raise
    if cfg.mean or cfg.std:  # the statistics the weights were trained with; an exported model keeps them
        model.pretrained_cfg = {**model.pretrained_cfg, **({"mean": tuple(cfg.mean)} if cfg.mean else {}),
                                **({"std": tuple(cfg.std)} if cfg.std else {})}
    if cfg.checkpoint:
        load_weights(model, cfg.checkpoint)
        log.info("loaded %s weights from %s", cfg.arch, cfg.checkpoint)
    return Network(model, data_mean, data_std)


# pretrained_cfg entries that describe timm's published weights, not ours
NOT_OURS = ("url", "file", "hf_hub_id", "hf_hub_filename", "source", "tag", "license", "origin_url", "paper_ids",
            "paper_name", "notes", "test_input_size", "test_crop_pct", "test_crop_mode")


def save_weights(model: nn.Module, path: str | Path) -> None:
    """The bare state dict as one .safetensors file, written atomically (`teacher.checkpoint` loads it)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def export_network(model: nn.Module, path: str | Path, image_size: int, val_resize: int) -> None:
    """`*.safetensors`: the bare timm weights (`timm.create_model(arch, num_classes=...)` loads them);
    otherwise a timm-native folder (`timm.create_model("local-dir:PATH", pretrained=True)`). Atomic."""
    if Path(path).suffix == ".safetensors":
        save_weights(model, path)
    else:
        save_timm_folder(model, path, image_size, val_resize)


def save_timm_folder(model: nn.Module, out_dir: str | Path, image_size: int, val_resize: int) -> None:
    """A folder `timm.create_model("local-dir:DIR", pretrained=True)` loads and the Hugging Face Hub takes as
    is: config.json (timm's layout: architecture, num_classes, pretrained_cfg with the input statistics and
    the eval transform of this run), model.safetensors and a model card. Written to DIR.tmp, then renamed."""
    out_dir = Path(out_dir)
    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in NOT_OURS and v is not None}
    pretrained_cfg.update(num_classes=model.num_classes, input_size=(3, image_size, image_size),
                          crop_pct=image_size / val_resize, crop_mode="center", interpolation="bilinear")
    config = {"architecture": pretrained_cfg.pop("architecture", None) or model.default_cfg["architecture"],
              "num_classes": model.num_classes, "num_features": model.num_features, "pretrained_cfg": pretrained_cfg}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_weights(model, tmp / "model.safetensors")
    (tmp / "README.md").write_text(
        f"---\ntags: [image-classification, timm]\nlibrary_name: timm\n---\n# {config['architecture']}, distilled "
        f"with kdpipe\n\n```python\nimport timm\nmodel = timm.create_model(\"local-dir:PATH\", pretrained=True)  "
        f"# or \"hf-hub:USER/REPO\"\n```\n")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def freeze(network: Network) -> Network:
    """A teacher: eval mode (BN statistics fixed), no parameter takes gradients. The trainer keeps it
    outside the trained module, so no `.train()` call reaches it."""
    network.eval()
    network.requires_grad_(False)
    return network


def fold_batchnorm(network: Network) -> nn.Module:
    """A frozen network with each BatchNorm folded into the convolution before it (torch.fx's conv-bn
    fusion on a copy): the same outputs up to fp32 rounding, one pass less over every activation.
    A network fx cannot trace runs unfolded, logged once."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(network.eval())
    except Exception as e:  # e.g. data-dependent control flow in a timm architecture
        log.warning("FALLBACK: cannot fold BatchNorm into the convolutions of the teacher (%s: %s); it runs "
                    "unfolded", type(e).__name__, e)
        return network
    return folded.requires_grad_(False)
