"""Typed configuration: dataclass sections with defaults, YAML files and `--section.key value` overrides.

Unknown keys and wrong types are errors that name the key (and the file it came from).
Defaults follow `../shared/method-notes.md`.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "demo.yaml"


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    arch: str = "resnet18"
    checkpoint: str = ""  # local weights: .safetensors or a torch state dict ('' = random init)
    pretrained: bool = False  # timm hub weights (needs the network)
    train_if_missing: bool = False  # teacher only: train it with `--method none` when `checkpoint` is absent
    train_epochs: int = 0  # epochs for that teacher run (0 = train.epochs)
    train_per_class: int = -1  # teacher only: data.per_class of that teacher run (-1 = data.per_class, 0 = all)


@dataclass
class DataConfig:
    root: str = ""  # ImageNet layout root with train/ and val/ ('' = the embedded demo data)
    backend: str = "auto"  # dali | torch | auto (DALI where installed)
    format: str = "folder"  # folder | filelist | webdataset (DALI readers)
    image_size: int = 224
    val_resize: int = 256
    min_area: float = 0.08  # random-resized-crop area range [min_area, 1]
    workers: int = 4  # loader worker processes / DALI threads per process
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # on 0..1 pixels
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    per_class: int = 0  # use at most this many train images per class (0 = all; for quick runs)
    val_per_class: int = 0
    demo_dir: str = ".data/fashion_mnist_jpeg"  # where the demo JPEG tree is written once
    hw_decoder_load: float = 0.65  # DALI on GPU: share of JPEGs sent to the hardware decoder (A100/H100)


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256  # global: split evenly over processes
    lr: float = 0.1  # per 256 images (scaled by batch_size / 256)
    momentum: float = 0.9
    weight_decay: float = 1e-4  # not on biases, norm layers or method scalars
    sched: str = "step"  # step | cosine
    decay_epochs: list[int] = field(default_factory=lambda: [30, 60, 90])
    decay_rate: float = 0.1
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    ce_weight: float = 1.0  # gamma
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    compile: str = "auto"  # auto (on where CUDA is present) | on | off
    compile_backend: str = "inductor"
    seed: int = 0
    steps_per_epoch: int = 0  # cap the steps of an epoch (0 = the whole epoch; for smoke runs)
    log_every: int = 20
    output_dir: str = "runs"
    name: str = ""  # run folder name ('' = derived from method and archs)
    keep_checkpoints: int = 3
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0 = per epoch only)
    skip_nonfinite: bool = False
    dist_timeout_s: int = 600  # a collective waiting longer (a dead or hung rank) raises instead of hanging
    baseline: bool = False  # also train the student alone (--method none, once, cached beside the teacher) and print both


@dataclass
class KDConfig:
    weight: float = 1.0
    temperature: float = 4.0


@dataclass
class DKDConfig:
    weight: float = 1.0
    temperature: float = 4.0


@dataclass
class ICDConfig:
    weight: float = 1.0  # beta
    alpha: float = 0.5  # invariance weight
    dim: int = 128
    init_log_scale: float = 1.0  # tau
    init_bias: float = 0.0  # b
    max_scale: float = 10.0
    negatives: str = "local"  # local (official: this process's batch) | global (ICD on all processes' batch)


@dataclass
class CCDConfig:
    weight: float = 0.0  # beta; 0 = 25.6 / d_t
    theta: float = 2.0
    eps: float = 1e-5


@dataclass
class SLKDConfig:
    alpha: float = 0.1
    temperature: float = 4.0
    rho: float = 0.5
    lam: float = 1.0
    eta: float = 3.0
    detach: bool = True  # eq. 3 of the paper; false reproduces the public code


@dataclass
class CRDConfig:
    weight: float = 0.8
    dim: int = 128
    nce_k: int = 16384  # negatives per sample, drawn uniformly with replacement (official), so K >= N works
    nce_t: float = 0.07
    momentum: float = 0.5  # memory bank update


@dataclass
class Config:
    method: str = "kd"
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(arch="resnet34"))
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    dkd: DKDConfig = field(default_factory=DKDConfig)
    icd: ICDConfig = field(default_factory=ICDConfig)
    ccd: CCDConfig = field(default_factory=CCDConfig)
    slkd: SLKDConfig = field(default_factory=SLKDConfig)
    crd: CRDConfig = field(default_factory=CRDConfig)


CHOICES = {
    "data.backend": ("dali", "torch", "auto"),
    "data.format": ("folder", "filelist", "webdataset"),
    "train.sched": ("step", "cosine"),
    "train.precision": ("auto", "bf16", "fp32"),
    "train.compile": ("auto", "on", "off"),
    "icd.negatives": ("local", "global"),
}


def _check_value(key: str, value, annotation, source: str):
    """Return `value` as the field's type, or raise naming the key."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list of {item_type.__name__}, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item_type, source) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is str and isinstance(value, bool) and "on" in CHOICES.get(key, ()):
        value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
    if annotation is float and isinstance(value, str):
        try:  # PyYAML reads '1e-4' (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: '{key}' must be {annotation.__name__}, got {value!r} ({type(value).__name__})")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{source}: '{key}' must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return value


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def apply(cfg, updates: dict, source: str, prefix: str = ""):
    """Merge a nested dict into the dataclass `cfg` in place, checking every key and type."""
    hints = typing.get_type_hints(type(cfg))
    fields = _fields(type(cfg))
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown config key '{dotted}' (choices: {', '.join(fields)})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' is a section; give it a mapping, got {value!r}")
            apply(current, value, source, prefix=f"{dotted}.")
        else:
            setattr(cfg, key, _check_value(dotted, value, hints[key], source))
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def flat_keys(cfg, prefix: str = "") -> dict[str, object]:
    """{'train.lr': <annotation>, ...} for every leaf key."""
    out = {}
    hints = typing.get_type_hints(type(cfg))
    for name in _fields(type(cfg)):
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            out.update(flat_keys(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = hints[name]
    return out


def nest(dotted: dict[str, object]) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Distil a timm teacher into a timm student. Every config key is also a flag: --train.lr 0.2",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML recipe")
    parser.add_argument("--resume", default="", help="'auto' (newest complete checkpoint of the run) or a checkpoint path")
    for key in flat_keys(Config()):
        # Values are parsed as YAML scalars (so `--train.decay_epochs [30,60]` works) and type-checked later.
        parser.add_argument(f"--{key}", dest=key, default=None, metavar="VALUE", help=argparse.SUPPRESS if key != "method" else "terms joined by '+', e.g. icd+kd")
    return parser


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    """Defaults <- YAML recipe <- command-line overrides."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = Config()
    apply(cfg, load_yaml(args.config), source=str(args.config))
    overrides = {}
    for key, annotation in flat_keys(cfg).items():
        raw = getattr(args, key)
        if raw is not None:  # a string key keeps the text as typed (YAML would read 'off' as false)
            overrides[key] = raw if annotation is str or raw == "" else yaml.safe_load(raw)
    apply(cfg, nest(overrides), source="command line")
    return cfg, args
