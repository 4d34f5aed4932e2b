"""Typed configuration: pydantic sections with defaults, YAML recipes and `--section.key value` overrides.

Each key is one declaration: `name: type = Field(default, <range>, description="...")`; the type, range and
description drive the validation, the one-line errors (`'<key>' must be ..., got ...`, naming the file or
the command line) and `launch/imagenet.py --help`. Unknown keys are errors. Defaults follow
`../shared/method-notes.md`. Values are strict: `1` is no boolean, `'8'` no integer (an integer is a float).
"""
from __future__ import annotations

import argparse
import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

import annotated_types
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import BadInputError, MissingInputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "demo.yaml"


class ConfigError(BadInputError):
    pass


# ---- value types shared by several keys --------------------------------------------------------
def _increasing(values: list) -> list:
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("must be increasing")
    return values


def _empty_or_three(values: list) -> list:
    if len(values) not in (0, 3):
        raise ValueError("must be 3 numbers (R, G, B) or [] (the architecture's own)")
    return values


def _timm_model(name: str) -> str:
    import timm  # lazily: `--help` and plain Config() need no timm

    if ":" not in name and not timm.is_model(name):  # 'hf-hub:...' / 'local-dir:...' are timm's to check
        raise ValueError("must be a timm architecture (see timm.list_models())")
    return name


Unit = Annotated[float, Field(ge=0, le=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
RGBMean = Annotated[list[Unit], Field(min_length=3, max_length=3)]
RGBStd = Annotated[list[PositiveFloat], Field(min_length=3, max_length=3)]
Arch = Annotated[str, AfterValidator(_timm_model)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---- the sections ------------------------------------------------------------------------------
class ModelConfig(Section):
    arch: Arch = Field("resnet18", description="timm architecture name")
    checkpoint: str = Field("", description="local weights: .safetensors or a torch state dict ('' = random init)")
    pretrained: bool = Field(False, description="timm hub weights (needs the network)")
    train_if_missing: bool = Field(False, description="teacher only: train it with `--method none` when `checkpoint` is absent")
    train_epochs: int = Field(0, ge=0, description="epochs for that teacher run (0 = train.epochs)")
    train_per_class: int = Field(
        -1, ge=-1, description="teacher only: data.per_class of that teacher run (-1 = data.per_class, 0 = all)")
    train_batch_size: int = Field(
        0, ge=0, description="teacher only: train.batch_size (per process) of that teacher run (0 = the student's)")
    cache: str = Field(
        "", description="teacher only: a teacher-output cache folder (launch/cache_teacher.py writes it; a run reads "
                        "the teacher's outputs from it instead of running the teacher); '' = off")
    cache_topk: int = Field(
        10, ge=1, description="teacher only, cache pass: logits kept per view, the K largest (capped at the number of "
                              "classes, where the cache is exact)")
    cache_features: bool = Field(
        False, description="teacher only, cache pass: also store the pooled features (fp16; icd, ccd and crd need them)")
    mean: Annotated[list[Unit], AfterValidator(_empty_or_three)] = Field(
        [], description="input mean the weights were trained with, on 0..1 pixels ([] = the arch's pretrained_cfg)")
    std: Annotated[list[PositiveFloat], AfterValidator(_empty_or_three)] = Field(
        [], description="input std the weights were trained with ([] = the arch's pretrained_cfg)")


class DataConfig(Section):
    root: str = Field("", description="dataset root with train/ and val/ ('' = the embedded demo data)")
    backend: Literal["dali", "torch", "auto"] = Field("auto", description="loader (auto: DALI where installed)")
    format: Literal["folder", "filelist", "webdataset"] = Field("folder", description="dataset layout (both backends)")
    image_size: int = Field(224, ge=1, description="train crop and val centre crop, pixels")
    val_resize: int = Field(256, ge=1, description="val: shorter side resized to this before the crop (>= image_size)")
    min_area: float = Field(0.08, gt=0, le=1, description="random-resized-crop area range [min_area, 1]")
    aug_seed: int = Field(
        -1, ge=-1, description="seed of the replayed views (crop windows, flips; pipeline/data/views.py); -1 = train.seed")
    workers: int = Field(4, ge=0, description="loader worker processes / DALI threads per process")
    mean: RGBMean = Field([0.485, 0.456, 0.406], description="loader normalisation mean, on 0..1 pixels")
    std: RGBStd = Field([0.229, 0.224, 0.225], description="loader normalisation std, on 0..1 pixels")
    per_class: int = Field(0, ge=0, description="use at most this many train images per class (0 = all)")
    val_per_class: int = Field(0, ge=0, description="the same for val (0 = all)")
    demo_dir: str = Field(".data/fashion_mnist_jpeg", description="where the demo JPEG tree is written once")
    hw_decoder_load: float = Field(0.65, ge=0, le=1, description="DALI on GPU: share of JPEGs sent to the hardware decoder")
    real_labels: str = Field("", description="ImageNet-ReaL top-1 on val: 'timm' (labels shipped with timm), a real.json path, or '' (off)")


class AugmentConfig(Section):
    mixup_alpha: float = Field(
        0.0, ge=0, description="mixup: lambda ~ Beta(alpha, alpha) per sample, partner = its pair-mate in the epoch's "
                               "order; teacher and student see the same mixed image (0 = off; timm's --mixup)")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix: the same, pasting a box of the mate (0 = off; timm's --cutmix)")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability that a sample is mixed at all (timm's --mixup-prob)")
    switch_prob: float = Field(
        0.5, ge=0, le=1, description="with both alphas > 0: probability of CutMix instead of mixup (timm's --mixup-switch-prob)")
    randaug_ops: int = Field(
        0, ge=0, le=14, description="RandAugment: operations per view, replayed from data.aug_seed (0 = off; timm's rand-n)")
    randaug_magnitude: int = Field(9, ge=0, le=30, description="RandAugment: magnitude bin of 31 (timm's rand-m)")


class EMAConfig(Section):
    decay: float = Field(
        0.0, ge=0, lt=1, description="student EMA (timm's ModelEmaV3) decay per optimizer step; a skipped step leaves it "
                                     "untouched; evaluated as ema_top1/ema_top5 (0 = off; timm's --model-ema-decay)")
    warmup: bool = Field(False, description="timm's warm-up: decay min(ema.decay, 1 - (1 + step)^(-2/3)) (--model-ema-warmup)")
    export: bool = Field(False, description="also export the EMA weights beside the student's: student_ema.safetensors, student_ema/")


class TrainConfig(Section):
    epochs: int = Field(100, ge=1, description="training epochs")
    batch_size: int = Field(256, ge=1, description="images per process per step (global batch: this x processes)")
    global_batch_size: int = Field(
        0, ge=0, description="> 0: the global batch, split evenly over processes (train.batch_size is then not used); "
                             "0: batch_size x processes")
    lr: float = Field(0.1, gt=0, description="learning rate per 256 images of the global batch (x global batch / 256)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="not on biases, norm layers or method scalars")
    sched: Literal["step", "cosine"] = Field("step", description="learning-rate schedule, stepped per update")
    decay_epochs: Annotated[list[Annotated[int, Field(ge=1)]], AfterValidator(_increasing)] = Field(
        [30, 60, 90], description="step schedule: increasing epochs at which lr is multiplied by decay_rate")
    decay_rate: float = Field(0.1, gt=0, le=1, description="step schedule: lr factor at each decay epoch")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from warmup_lr (fractions allowed)")
    warmup_lr: float = Field(1e-5, ge=0, description="learning rate at the start of the warm-up")
    min_lr: float = Field(0.0, ge=0, description="cosine schedule: final learning rate")
    ce_weight: float = Field(1.0, ge=0, description="gamma: weight of the student's cross-entropy")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="CE target (1 - eps) onehot + eps / classes; with mixup/CutMix, of both labels (timm's --smoothing)")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    tf32: bool = Field(
        False, description="CUDA: TF32 tensor cores for float32 matmuls and convolutions (faster, ~1e-3 relative error; "
                           "false keeps the float32 paths, e.g. CRD's exp(s / 0.07), exact)")
    compile: Literal["auto", "on", "off"] = Field("auto", description="torch.compile (auto: on where CUDA is present)")
    compile_backend: str = Field("inductor", min_length=1, description="torch.compile backend")
    seed: int = Field(0, ge=0, description="initial weights, sample order and augmentation")
    steps_per_epoch: int = Field(0, ge=0, description="cap the steps of an epoch (0 = the whole epoch; smoke runs)")
    log_every: int = Field(20, ge=1, description="log the training losses every N steps")
    eval_every: int = Field(1, ge=1, description="evaluate on the validation set every N epochs (and after the last)")
    output_dir: str = Field("runs", min_length=1, description="runs are written to output_dir/name")
    name: str = Field("", description="run folder name ('' = method-teacher-student)")
    keep_checkpoints: int = Field(3, ge=1, description="newest complete checkpoints kept")
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps inside an epoch (0 = per epoch only)")
    skip_nonfinite: bool = Field(False, description="skip a step with a non-finite loss instead of stopping")
    dist_timeout_s: int = Field(600, ge=1, description="a collective waiting longer (a dead or hung rank) raises instead of hanging")
    baseline: bool = Field(
        False, description="also train the student alone (--method none, once, cached beside the teacher) and print both")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto (CUDA, else one CPU process) | cuda (an error without CUDA) | cpu (any number of CPU processes)")


class KDConfig(Section):
    weight: float = Field(1.0, ge=0, description="weight of T^2 KL(p_t^T || p_s^T)")
    temperature: float = Field(4.0, gt=0, description="T")


class DKDConfig(Section):
    weight: float = Field(1.0, ge=0, description="weight of the difference-KD term")
    temperature: float = Field(4.0, gt=0, description="T")


class ICDConfig(Section):
    weight: float = Field(1.0, ge=0, description="beta")
    alpha: float = Field(0.5, ge=0, description="invariance weight")
    dim: int = Field(128, ge=1, description="embedding width of the heads")
    init_log_scale: float = Field(1.0, description="tau: initial log scale")
    init_bias: float = Field(0.0, description="b: initial bias")
    max_scale: float = Field(10.0, gt=0, description="upper bound of the learnable scale")
    negatives: Literal["local", "global"] = Field(
        "local", description="in-batch negatives: local (official: this process's batch) | global (gathered from "
                             "every process: the global batch)")


class CCDConfig(Section):
    weight: float = Field(0.0, ge=0, description="beta (0 = 25.6 / d_t)")
    theta: float = Field(2.0, ge=0, description="weight of the off-diagonal correlations")
    eps: float = Field(1e-5, gt=0, description="variance floor of the standardisation")


class SLKDConfig(Section):
    alpha: float = Field(0.1, ge=0, le=1, description="CE share in each KD pair: alpha*CE + (1-alpha)*KD")
    temperature: float = Field(4.0, gt=0, description="T")
    rho: float = Field(0.5, ge=0, le=1, description="fusion of the two self-learning teachers' logits")
    lam: float = Field(1.0, ge=0, description="lambda: weight of the teacher pair")
    eta: float = Field(3.0, ge=0, description="weight of the self-learning pair")
    detach: bool = Field(True, description="eq. 3 of the paper; false reproduces the public code")


class CRDConfig(Section):
    weight: float = Field(0.8, ge=0, description="weight of the NCE loss")
    dim: int = Field(128, ge=1, description="embedding width")
    nce_k: int = Field(16384, ge=1, description="negatives per sample, drawn with replacement from other classes (official)")
    nce_t: float = Field(0.07, gt=0, description="NCE temperature")
    momentum: float = Field(0.5, ge=0, le=1, description="memory bank update")
    shared_negatives: bool = Field(
        False, description="one K-negative draw shared by the batch, same-class ones masked (a deviation, much cheaper)")


def _method(spec: str) -> str:
    from pipeline.methods import parse_method  # lazily: the methods import this module

    try:
        parse_method(spec)
    except ValueError as e:  # its message names the terms and the choices
        raise ValueError(f"must be valid: {str(e).replace(f' in --method {spec!r}', '')}") from None
    return spec


class Config(Section):
    method: Annotated[str, AfterValidator(_method)] = Field("kd", description="'+'-joined method terms, e.g. icd+kd")
    teacher: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="resnet34"), description="the frozen teacher")
    student: ModelConfig = Field(default_factory=ModelConfig, description="the trained student")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and loaders")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation, schedule, runs")
    augment: AugmentConfig = Field(default_factory=AugmentConfig,
                                   description="train augmentation beyond crop and flip, replayed from data.aug_seed")
    ema: EMAConfig = Field(default_factory=EMAConfig, description="a moving average of the student's weights")
    kd: KDConfig = Field(default_factory=KDConfig, description="Hinton KD")
    dkd: DKDConfig = Field(default_factory=DKDConfig, description="difference KD between two views")
    icd: ICDConfig = Field(default_factory=ICDConfig, description="ICD; in-batch: see icd.negatives")
    ccd: CCDConfig = Field(default_factory=CCDConfig,
                           description="CCD; in-batch: correlations over this process's batch, not gathered")
    slkd: SLKDConfig = Field(default_factory=SLKDConfig, description="SLKD")
    crd: CRDConfig = Field(default_factory=CRDConfig, description="CRD")


def cross_checks(cfg: Config) -> list[tuple[str, str, object]]:
    """(key, 'must be ...', got) for rules between keys. A step milestone or a warm-up beyond train.epochs is
    allowed: a smoke run shortens epochs without editing the recipe's schedule."""
    d = cfg.data
    problems = []
    if d.val_resize < d.image_size:
        problems.append(("data.val_resize", f"at least data.image_size ({d.image_size})", d.val_resize))
    if d.real_labels and d.format == "webdataset":
        problems.append(("data.real_labels", "'' with data.format webdataset (the shards keep no file names)",
                         d.real_labels))
    return problems


# ---- YAML, validation, errors ------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (YAML 1.1 also reads on/off/yes/no, so `compile: off`
    would be a boolean) and 1e-4 is a float (YAML 1.1 wants a dot)."""


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+)$"
    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"), list("-+0123456789."))


def parse_value(text: str):
    """A command-line value as a YAML scalar or list: `0.1`, `1e-4`, `true`, `[30, 60]`."""
    return yaml.load(text, Loader=_Loader)


def _key(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _section_keys(loc: tuple) -> list[str]:
    model = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


def describe_error(error: dict, source: str) -> str:
    """One pydantic error as one line: `<source>: '<key>' must be ..., got <value>`."""
    loc, kind = error["loc"], error["type"]
    key = _key(loc)
    if kind == "extra_forbidden":
        return f"{source}: unknown config key '{key}' (choices: {', '.join(_section_keys(loc[:-1]))})"
    if kind == "model_type":
        return f"{source}: '{key}' is a section: give it a mapping of its keys, got {error['input']!r}"
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        must = f"one of {ctx['expected']}"
    elif kind in ("too_short", "too_long"):
        must = (f"a list of {ctx['min_length']} items" if ctx.get("min_length") == ctx.get("max_length")
                else f"a list of at {'least' if kind == 'too_short' else 'most'} "
                     f"{ctx.get('min_length', ctx.get('max_length'))} items")
        if key.endswith(("mean", "std")):
            must = "a list of 3 numbers (R, G, B)"
    else:
        must = re.sub(r"^(Input should be |Value error, (must be )?)", "", error["msg"])
        must = {"a valid number": "a number", "a valid integer": "an integer", "a valid boolean": "true or false",
                "a valid string": "a string (quote it in YAML)", "a valid list": "a list, e.g. [1, 2]"}.get(must, must)
    return f"{source}: '{key}' must be {must}, got {error['input']!r}"


def _validate(data: dict, source: str) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ConfigError(describe_error(errors[0], source) + more) from None
    for key, must, got in cross_checks(cfg):
        raise ConfigError(f"{source}: '{key}' must be {must}, got {got!r}")
    return cfg


def _merge(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply(cfg: Config, updates: dict, source: str) -> Config:
    """Merge a nested dict into `cfg` in place, validating every key and value (errors name `source`)."""
    new = _validate(_merge(cfg.model_dump(), updates), source)
    for name in type(cfg).model_fields:
        setattr(cfg, name, getattr(new, name))
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def to_dict(cfg: Config) -> dict:
    return cfg.model_dump()


class _Dumper(yaml.SafeDumper):
    """Quotes every string this module's YAML 1.2 reader would read as something else: PyYAML writes
    YAML 1.1, which leaves `1e5` bare (no float in 1.1), and reading it back would make a run name a number."""


def _represent_str(dumper, text: str):
    plain = dumper.represent_scalar("tag:yaml.org,2002:str", text)
    try:
        ours = yaml.load(yaml.serialize(plain, Dumper=yaml.SafeDumper), Loader=_Loader)
    except yaml.YAMLError:
        ours = None
    if ours != text:
        plain.style = "'"
    return plain


_Dumper.add_representer(str, _represent_str)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML that `load_yaml` reads back to the same config (a run's config.yaml)."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False)


def nest(dotted: dict[str, object]) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# ---- the command line --------------------------------------------------------------------------
def keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, tuple[str, object]]:
    """{'train.lr': (section, FieldInfo), ...} for every leaf key, in declaration order."""
    out = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            out.update(keys(info.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = (prefix.rstrip(".") or "general", info)
    return out


def _bounds(metadata) -> list[str]:
    symbols = {annotated_types.Gt: (">", "gt"), annotated_types.Ge: (">=", "ge"),
               annotated_types.Lt: ("<", "lt"), annotated_types.Le: ("<=", "le")}
    out = []
    for m in metadata:
        for cls, (symbol, attr) in symbols.items():
            if isinstance(m, cls):
                out.append(f"{symbol}{getattr(m, attr)}")
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            out.append(f"{m.min_length} items" if m.min_length > 1 else "non-empty")
    return out


def _type_text(annotation, metadata=()) -> str:
    """'FLOAT(>0)', '{step,cosine}', '[INT(>=1), ...]' for --help."""
    bounds = list(_bounds(metadata))
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        bounds += _bounds(m for e in extra for m in getattr(e, "metadata", [e]))
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(typing.get_args(annotation)) + "}"
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        inner = _type_text(item)
        return f"[{inner}, ...]" + (f"({','.join(bounds)})" if bounds else "")
    return annotation.__name__.upper() + (f"({','.join(bounds)})" if bounds else "")


def _batch_list(text: str) -> list[int]:
    try:
        batches = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, got {text!r}")
    return batches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        usage="%(prog)s [-h] [--config YAML] [--resume auto|PATH] [--section.key VALUE ...]",
        description="Distil a timm teacher into a timm student. Every config key is a YAML entry "
                    "(section: {key: value}) and a flag (--section.key VALUE, parsed as YAML: --train.decay_epochs "
                    "[30,60]). Precedence: defaults < --config recipe < flags.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML recipe (default: configs/demo.yaml)")
    parser.add_argument("--resume", default="", help="'auto' (newest complete checkpoint of the run) or a checkpoint path")
    bench = parser.add_argument_group("benchmark (measure instead of training; pipeline/benchmark.py)")
    bench.add_argument("--benchmark", choices=("step", "loader"), default=None,
                       help="time the training step on synthetic data on the device, or the train loader alone")
    bench.add_argument("--peak-tflops", type=float, default=0.0,
                       help="the device's peak (e.g. 989 for H100 bf16 dense): report the achieved fraction")
    bench.add_argument("--benchmark-steps", type=int, default=30, help="timed steady-state steps")
    bench.add_argument("--benchmark-warmup", type=int, default=5, help="untimed steps first (compile, autotune)")
    bench.add_argument("--benchmark-batches", type=_batch_list, default=None, metavar="B1,B2,...",
                       help="step: sweep these per-process batches (e.g. 32,64,128,256) and print images/s at each")
    defaults = Config()
    groups = {}
    for key, (section, info) in keys().items():
        if section not in groups:
            about = Config.model_fields[section].description if section in Config.model_fields else "top level"
            groups[section] = parser.add_argument_group(f"{section} ({about})")
        default = defaults
        for part in key.split("."):
            default = getattr(default, part)
        help_text = f"{info.description} [default: {default!r}]".replace("%", "%%")
        groups[section].add_argument(f"--{key}", dest=key, default=None, help=help_text,
                                     metavar=_type_text(info.annotation, info.metadata))
    return parser


def _keeps_text(annotation) -> bool:
    """Strings and string choices take the flag's text as typed (YAML would make `--train.name 1` an int)."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation is str or typing.get_origin(annotation) is Literal


def unknown_argument(word: str, parser: argparse.ArgumentParser) -> str:
    """One line for an argument the parser does not know, naming the nearest flag (a typo such as --train.lrr)."""
    if not word.startswith("-"):
        return f"command line: unexpected argument {word!r} (every setting is a flag: --section.key VALUE)"
    flag = word.split("=", 1)[0]
    known = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    near = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}?" if near else "launch/imagenet.py --help lists every flag"
    return f"command line: unknown flag {flag} ({hint})"


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    """Defaults <- YAML recipe <- command-line flags, validated after each layer (errors name the layer)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise ConfigError(unknown_argument(extra[0], parser))
    cfg = apply(Config(), load_yaml(args.config), source=str(args.config))
    overrides = {}
    for key, (_, info) in keys().items():
        raw = getattr(args, key)
        if raw is not None:
            try:
                overrides[key] = raw if _keeps_text(info.annotation) or raw == "" else parse_value(raw)
            except yaml.YAMLError:
                overrides[key] = raw  # not YAML: the type check names the key and the text
    apply(cfg, nest(overrides), source="command line")
    return cfg, args
