"""Config: YAML recipes and flags, validated per key; bad input is one line naming the key or file, exit 2.

Most bad inputs go through `launch/imagenet.py`'s main() in-process (SystemExit caught, stderr captured);
two run as real commands: `python launch/imagenet.py` and a 2-process `accelerate launch`.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import timm
from safetensors.torch import save_file

from pipeline.config import CONFIG_DIR, Config, ConfigError, build_parser, keys, parse_args
from pipeline.methods import parse_method
from tests.conftest import ACCELERATE, REPO, tiny_run_args


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def launch_main():
    """launch/imagenet.py's main(), loaded by path (launch/ is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location("launch_imagenet", REPO / "launch" / "imagenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def user_error(capsys, argv) -> str:
    """Run main(argv), expect exit status 2 and one `error: ...` line without a traceback; return it."""
    main = launch_main()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err  # one line, the last thing printed
    return errors[0]


# ---- valid input ----
def test_yaml_then_command_line_override(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.3\n  decay_epochs: [5, 9]\n  compile: off\nstudent:\n  arch: resnet10t\n")
    cfg, _ = parse_args(["--config", path, "--train.lr", "1e-3", "--method", "icd+kd", "--train.name", "007"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.decay_epochs == [5, 9]
    assert cfg.student.arch == "resnet10t" and cfg.teacher.arch == "resnet34"  # the teacher keeps its default
    assert cfg.train.compile == "off" and cfg.method == "icd+kd"  # YAML `off` is the string, not false
    assert cfg.train.name == "007"  # a string key keeps the text as typed


def test_ints_are_floats_but_not_the_reverse(tmp_path):
    cfg, _ = parse_args(["--train.lr", "1", "--teacher.mean", "[0.5, 0.5, 0.5]", "--teacher.std", "[1, 1, 1]"])
    assert cfg.train.lr == 1.0 and cfg.teacher.mean == [0.5] * 3 and cfg.teacher.std == [1.0] * 3


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    cfg, _ = parse_args(["--config", str(path)])
    parse_method(cfg.method)


def test_help_lists_every_key_with_type_default_and_description():
    text = build_parser().format_help()
    for key, (section, info) in keys().items():
        assert f"--{key} " in text, key
        assert info.description and len(info.description.splitlines()) == 1, key
    flat = " ".join(text.split())
    assert ("--train.lr FLOAT(>0) learning rate per 256 images of the global batch (x global batch / 256) "
            "[default: 0.1]") in flat
    assert "--data.backend {dali,torch,auto}" in flat and "--train.epochs INT(>=1)" in flat
    assert re.search(r"^train \(", text, re.M) and re.search(r"^ccd \(", text, re.M)  # grouped by section
    assert len(keys()) > 70 and "method" in keys() and "ccd.theta" in keys()


def test_every_key_has_a_description_and_its_default_is_valid():
    for key, (_, info) in keys().items():
        assert info.description, key
    Config.model_validate(Config().model_dump())  # the defaults pass their own checks


# ---- bad input: one line, naming the key or the file, exit status 2 ----
BAD_FLAGS = [
    (["--train.epochs", "-1"], "command line: 'train.epochs' must be greater than or equal to 1, got -1"),
    (["--train.lr", "-1"], "command line: 'train.lr' must be greater than 0, got -1"),
    (["--train.batch_size", "0"], "'train.batch_size' must be greater than or equal to 1, got 0"),
    (["--data.image_size", "0"], "'data.image_size' must be greater than or equal to 1, got 0"),
    (["--ccd.theta", "-2"], "'ccd.theta' must be greater than or equal to 0, got -2"),
    (["--train.batch_size", "2.5"], "'train.batch_size' must be an integer, got 2.5"),
    (["--train.epochs", "ten"], "'train.epochs' must be an integer, got 'ten'"),
    (["--train.skip_nonfinite", "maybe"], "'train.skip_nonfinite' must be true or false, got 'maybe'"),
    (["--data.backend", "opencv"], "'data.backend' must be one of 'dali', 'torch' or 'auto', got 'opencv'"),
    (["--train.decay_epochs", "30"], "'train.decay_epochs' must be a list, e.g. [1, 2], got 30"),
    (["--train.decay_epochs", "[60, 30]"], "'train.decay_epochs' must be increasing, got [60, 30]"),
    (["--data.image_size", "64", "--data.val_resize", "60"],
     "'data.val_resize' must be at least data.image_size (64), got 60"),
    (["--teacher.mean", "[0.5, 0.5]"], "'teacher.mean' must be 3 numbers (R, G, B) or []"),
    (["--student.std", "[0.2, 0, 0.2]"], "'student.std[1]' must be greater than 0, got 0"),
    (["--data.mean", "[0.5, 0.5]"], "'data.mean' must be a list of 3 numbers (R, G, B), got [0.5, 0.5]"),
    (["--data.min_area", "1.5"], "'data.min_area' must be less than or equal to 1, got 1.5"),
    (["--train.lr", ".nan"], "'train.lr' must be a finite number"),
    (["--student.arch", "resnet999"], "'student.arch' must be a timm architecture (see timm.list_models()), got 'resnet999'"),
    (["--method", "icd+kdd"], "'method' must be valid: unknown method term 'kdd' (choices: "),
    (["--data.format", "webdataset", "--data.real_labels", "timm"], "'data.real_labels' must be ''"),
]


@pytest.mark.parametrize("argv,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_naming_the_key(capsys, argv, message):
    assert message in user_error(capsys, argv)


def test_bad_recipes_name_the_file_and_the_key(capsys, tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.3\n")
    line = user_error(capsys, ["--config", path])
    assert re.search(r"recipe\.yaml: unknown config key 'train\.lrr' \(choices: epochs, .*\blr\b", line)
    line = user_error(capsys, ["--config", write(tmp_path, "trian:\n  lr: 0.3\n")])
    assert "unknown config key 'trian' (choices: method, teacher" in line
    line = user_error(capsys, ["--config", write(tmp_path, "train:\n  epochs: ten\n")])
    assert "recipe.yaml: 'train.epochs' must be an integer, got 'ten'" in line
    line = user_error(capsys, ["--config", write(tmp_path, "train: 5\n")])
    assert "recipe.yaml: 'train' is a section: give it a mapping of its keys, got 5" in line
    line = user_error(capsys, ["--config", write(tmp_path, "train:\n  lr: [0.1\n")])
    assert "recipe.yaml: not valid YAML" in line
    assert f"config file not found: {tmp_path / 'nope.yaml'}" in user_error(capsys, ["--config", str(tmp_path / "nope.yaml")])


def test_errors_are_config_errors_for_callers():
    with pytest.raises(ConfigError, match="command line: 'crd.nce_t' must be greater than 0, got 0"):
        parse_args(["--crd.nce_t", "0"])


# ---- bad files, found when the run is set up ----
@pytest.fixture
def tiny(tmp_path, tiny_teacher):
    def argv(**overrides):
        return tiny_run_args(tmp_path / "runs", tiny_teacher, **{"train.epochs": 1, **overrides})
    return argv


def test_missing_or_empty_dataset_folder(capsys, tiny, tmp_path):
    line = user_error(capsys, tiny(**{"data.root": str(tmp_path / "nowhere"), "data.per_class": 0}))
    assert f"dataset folder not found: {tmp_path / 'nowhere' / 'train'}" in line
    (tmp_path / "empty" / "train").mkdir(parents=True)
    line = user_error(capsys, tiny(**{"data.root": str(tmp_path / "empty"), "data.per_class": 0}))
    assert f"no class folders in {tmp_path / 'empty' / 'train'}" in line


def test_bad_file_lists(capsys, tiny, tmp_path):
    root = tmp_path / "lists"
    root.mkdir()
    flags = {"data.root": str(root), "data.format": "filelist", "data.per_class": 0, "data.val_per_class": 0}
    assert f"file list not found: {root / 'train.txt'}" in user_error(capsys, tiny(**flags))
    (root / "train.txt").write_text("a.jpg 0\nb.jpg\n")
    assert f"{root / 'train.txt'}:2: expected '<path> <class>', got 'b.jpg'" in user_error(capsys, tiny(**flags))
    (root / "train.txt").write_bytes(b"\xff\xfe\x00garbage")
    assert f"cannot read file list {root / 'train.txt'}" in user_error(capsys, tiny(**flags))


def test_missing_and_mismatched_checkpoints(capsys, tiny, tmp_path):
    line = user_error(capsys, tiny(**{"teacher.checkpoint": str(tmp_path / "nowhere.safetensors")}))
    assert f"checkpoint not found: {tmp_path / 'nowhere.safetensors'}" in line
    other = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=10).state_dict(), str(other))
    line = user_error(capsys, tiny(**{"teacher.checkpoint": str(other)}))
    assert re.search(r"r18\.safetensors does not match ResNet: .*(missing|unexpected|shape)", line)
    line = user_error(capsys, tiny() + ["--resume", str(tmp_path / "no-such-checkpoint")])
    assert "no-such-checkpoint: not a complete checkpoint" in line


def test_damaged_or_non_checkpoint_teacher_file_is_one_line_naming_it(capsys, tiny, tmp_path):
    for name, content in (("html.safetensors", b"<html>404 Not Found</html>"), ("empty.safetensors", b""),
                          ("half.pth", b"PK\x03\x04" + bytes(range(200)))):
        path = tmp_path / name
        path.write_bytes(content)
        line = user_error(capsys, tiny(**{"teacher.checkpoint": str(path)}))
        assert line.startswith(f"error: {path} ({len(content)} bytes) cannot be read as ")
        assert "is it damaged or not a checkpoint?" in line


def test_unknown_flag_names_the_nearest_key(capsys):
    assert user_error(capsys, ["--train.lrr", "0.1"]) == "error: command line: unknown flag --train.lrr (did you mean --train.lr?)"
    assert "unknown flag --kd.temprature (did you mean --kd.temperature?)" in user_error(capsys, ["--kd.temprature", "2"])
    assert "unknown flag --xyz (launch/imagenet.py --help lists every flag)" in user_error(capsys, ["--xyz", "1"])
    assert "unexpected argument 'kd'" in user_error(capsys, ["kd"])


@pytest.fixture
def nothing_trains(monkeypatch):
    """Any Trainer built (the teacher's, the student alone's, the distillation's) fails the test."""
    import pipeline.trainer

    def refuse(*args, **kwargs):
        pytest.fail("a Trainer was built before the bad input was found")
    monkeypatch.setattr(pipeline.trainer.Trainer, "__init__", refuse)


def test_every_input_is_checked_before_anything_trains(capsys, tiny, tmp_path, nothing_trains):
    """The demo's order: train a missing teacher, then the student alone (train.baseline), then distil; each of
    these inputs used to fail only when the distillation was built, minutes later."""
    baseline = {"train.baseline": "true", "train.epochs": 1}
    other = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=10).state_dict(), str(other))
    line = user_error(capsys, tiny(**baseline, **{"teacher.checkpoint": str(other)}))  # resnet10t teacher
    assert re.search(r"r18\.safetensors does not match ResNet: .*(missing|unexpected|shape)", line)
    line = user_error(capsys, tiny(**baseline, **{"data.root": str(tmp_path / "nowhere"), "data.per_class": 0}))
    assert f"dataset folder not found: {tmp_path / 'nowhere' / 'train'}" in line
    line = user_error(capsys, tiny(**baseline) + ["--resume", str(tmp_path / "no-such-checkpoint")])
    assert "no-such-checkpoint: not a complete checkpoint" in line
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "teacher.safetensors"  # its folder cannot be made: a file is in the way
    line = user_error(capsys, tiny(**baseline, **{"teacher.checkpoint": str(cache), "teacher.train_if_missing": "true"}))
    assert f"the folder of teacher.checkpoint (where the trained teacher is cached) {cache.parent} cannot be written" in line
    line = user_error(capsys, tiny(**baseline, **{"train.output_dir": str(tmp_path / "a-file" / "runs")}))
    assert f"train.output_dir {tmp_path / 'a-file' / 'runs'} cannot be written" in line
    line = user_error(capsys, tiny(**baseline, **{"teacher.checkpoint": "", "teacher.train_if_missing": "false"}))
    assert "the method needs a teacher: set teacher.checkpoint" in line


def test_real_labels_on_non_imagenet_names(capsys, tiny, tmp_path):
    (tmp_path / "real.json").write_text(json.dumps([[0]]))
    line = user_error(capsys, tiny(**{"data.real_labels": str(tmp_path / "real.json")}))
    assert "is not an ImageNet val image name" in line


# ---- as real commands ----
def test_command_line_error_as_a_process():
    proc = subprocess.run([sys.executable, "launch/imagenet.py", "--train.lr", "-1"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: command line: 'train.lr' must be greater than 0, got -1"


@pytest.mark.slow  # a 2-process launch (~30 s); tests/test_batch.py pins the message in-process
def test_batch_not_divisible_by_processes_under_accelerate(tmp_path, tiny_teacher):
    """Each worker prints its one line and exits 2; the torchrun agent then reports the failed worker
    (its own summary) and exits non-zero."""
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_machines", "1", "--num_processes", "2",
           "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", "launch/imagenet.py",
           *tiny_run_args(tmp_path / "runs", tiny_teacher, **{"train.global_batch_size": 15})]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert 1 <= len(errors) <= 2  # the agent may stop the second worker before it prints
    assert set(errors) == {"error: train.global_batch_size 15 is not divisible by 2 processes: use a multiple of 2"}
    assert "exitcode  : 2" in proc.stderr  # the agent's report names the worker's status
    # no worker traceback: the only one is the agent's own report (ChildFailedError)
    assert proc.stderr.count("Traceback (most recent call last)") == proc.stderr.count("ChildFailedError:") <= 1
