"""Config: YAML recipes and command-line overrides; every error names the key (and the file)."""
import pytest

from pipeline.config import CONFIG_DIR, ConfigError, parse_args
from pipeline.methods import parse_method


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_then_command_line_override(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.3\n  decay_epochs: [5, 9]\nstudent:\n  arch: resnet10t\n")
    cfg, _ = parse_args(["--config", path, "--train.lr", "1e-3", "--train.compile", "off", "--method", "icd+kd"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.decay_epochs == [5, 9]
    assert cfg.student.arch == "resnet10t"
    assert cfg.train.compile == "off" and cfg.method == "icd+kd"


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.3\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml: unknown config key 'train\.lrr'.*lr"):
        parse_args(["--config", path])


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        parse_args(["--config", write(tmp_path, "trian:\n  lr: 0.3\n")])


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'train.epochs' must be int, got 'ten'"):
        parse_args(["--config", write(tmp_path, "train:\n  epochs: ten\n")])
    with pytest.raises(ConfigError, match="command line: 'train.batch_size' must be int, got 2.5"):
        parse_args(["--train.batch_size", "2.5"])
    with pytest.raises(ConfigError, match="'train.decay_epochs' must be a list"):
        parse_args(["--train.decay_epochs", "30"])


def test_bad_choice_lists_the_choices():
    with pytest.raises(ConfigError, match="'data.backend' must be one of dali, torch, auto"):
        parse_args(["--data.backend", "opencv"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        parse_args(["--config", str(tmp_path / "nope.yaml")])


def test_unknown_method_term_lists_choices():
    with pytest.raises(ValueError, match=r"unknown method term 'kdd'.*choices: .*kd"):
        parse_method("icd+kdd")
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_method("none+kd")
    assert parse_method("dccd") == ["kd", "dkd", "ccd"]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    cfg, _ = parse_args(["--config", str(path)])
    parse_method(cfg.method)
