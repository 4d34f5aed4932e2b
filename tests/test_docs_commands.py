"""Every command written in the README, docs/, launch/slurm/README.md, the recipes' comments and the scripts'
usage lines runs as written: the script or module exists, the flags it names exist, and the training
entry point's flags parse and validate (`--config` files included). Checked cheaply, without running anything."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipeline.config import keys, parse_args
from tests.conftest import REPO

DOCS = ["README.md", "launch/slurm/README.md", "docs/*.md", "configs/**/*.yaml", "launch/**/*.py",
        "launch/slurm/*.sbatch", "bench/*.py", "pipeline/**/*.py"]
PROGRAMS = ("accelerate", ".venv/bin/accelerate", "python", ".venv/bin/python", "sbatch", "bash")
TRAINING = ("launch/imagenet.py", "launch/slurm/imagenet.sbatch")  # their arguments go to pipeline.config
PASSES_CONFIG = ("launch/compare.py", "launch/cache_teacher.py")  # their own flags, and every config key as a flag
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|^\.\.\.$")  # RECIPE, SRC_ROOT, ...


def text_lines(path: Path) -> list[str]:
    """Lines that may hold a command: markdown code (blocks and `spans`), or comment/docstring lines."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    if path.suffix == ".md":
        lines += [span for line in lines for span in re.findall(r"`([^`]+)`", line)]
    else:
        lines = [line.lstrip("#").strip() for line in lines]
    joined, current = [], ""
    for line in lines:  # join `\` continuations
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            joined.append(current)
            current = ""
    return joined


def commands() -> list[tuple[str, str]]:
    found = []
    for pattern in DOCS:
        for path in sorted(REPO.glob(pattern)):
            for line in text_lines(path):
                for part in re.split(r"&&|;|\|\s", line.split(" # ")[0]):
                    words = part.split()
                    while words and re.match(r"^[A-Z_]+=\S*$", words[0]):  # VAR=value prefixes
                        words.pop(0)
                    if words and words[0] in PROGRAMS and len(words) > 1:
                        found.append((f"{path.relative_to(REPO)}", " ".join(words)))
    return sorted(set(found))


COMMANDS = commands()


def test_the_documents_hold_commands():
    where = {w for w, _ in COMMANDS}
    assert {"README.md", "launch/slurm/README.md", "bench/methods.py", "configs/imagenet/r34_r18.yaml"} <= where
    assert any("launch/slurm/imagenet.sbatch" in c for w, c in COMMANDS if w == "launch/slurm/imagenet.sbatch")


def split_command(command: str) -> tuple[str, list[str]]:
    """(script path or `-m module`, its arguments), launcher options skipped, `[...]` optional marks removed."""
    words = shlex.split(re.sub(r"\[(--[^]]*)\]", r"\1", command))
    for i, word in enumerate(words):
        if word == "-m":
            return f"-m {words[i + 1]}", words[i + 2:]
        if re.search(r"\.(py|sbatch|sh)$", word):
            return word, words[i + 1:]
    return "", words


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_documented_command_runs_as_written(where, command, monkeypatch):
    monkeypatch.chdir(REPO)  # commands are written for the repository root
    script, args = split_command(command)
    if script in ("-m pytest", ""):
        return  # pytest itself; `accelerate config` and the like
    if script.startswith("-m "):
        module = REPO / script[3:].replace(".", "/")
        assert (module / "__main__.py").is_file() or module.with_suffix(".py").is_file(), f"{where}: {command}"
        source = (module / "__main__.py") if module.is_dir() else module.with_suffix(".py")
    else:
        source = REPO / script
        assert source.is_file(), f"{where}: {script} does not exist ({command})"
    flags = [a.split("=")[0] for a in args if a.startswith("--")]
    if script in TRAINING:
        if any(PLACEHOLDER.match(a) for a in args):  # only the flag names can be checked
            known = {f"--{k}" for k in keys()} | {"--config", "--resume", "--help"}
            assert set(flags) <= known, f"{where}: unknown flags {set(flags) - known} in {command}"
        else:
            parse_args(args)  # names, values and the --config file, as the launcher would
    else:
        text = source.read_text()
        config_flags = {f"--{k}" for k in keys()} | {"--config"} if script in PASSES_CONFIG else set()
        for flag in flags:
            assert f'"{flag}"' in text or flag in config_flags, f"{where}: {script} has no flag {flag} ({command})"
