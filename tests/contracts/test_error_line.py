"""The one `error: ...` line of launch/imagenet.py is written whole: two processes failing at once (every
rank of an `accelerate launch` meets the same bad value) share one stderr, and under PYTHONUNBUFFERED
(set by many launchers) print() writes the text and its newline separately, so lines could interleave."""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return len(text)

    def flush(self):
        pass


def test_user_error_is_one_write_with_its_newline(monkeypatch):
    spec = importlib.util.spec_from_file_location("imagenet_entry", REPO / "launch" / "imagenet.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    recorder = Recorder()
    monkeypatch.setattr(sys, "stderr", recorder)
    with pytest.raises(SystemExit) as stop:
        entry.main(["--kd.temperature", "0"])  # bounds: gt=0
    assert stop.value.code == 2
    lines = [w for w in recorder.writes if "error:" in w]
    assert len(lines) == 1, recorder.writes
    (line,) = lines
    assert line.startswith("error: ") and line.endswith("\n") and line.count("\n") == 1
    assert "'kd.temperature'" in line
