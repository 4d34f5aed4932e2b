"""launch/check_dataset.py's counts on every format (bad images in both splits, so a per-split or total
count that adds wrongly shows) with the PIL checker, and kernels/reference.py's documented defaults."""
from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from kernels import reference

REPO = Path(__file__).resolve().parents[2]


def load_check_dataset():
    spec = importlib.util.spec_from_file_location("check_dataset_contract", REPO / "launch" / "check_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


GOOD, BAD = jpeg(), b"\xff\xd8 not really a jpeg"


def folder_dataset(root: Path):
    for split, files in {"train": {"a": [("1.jpg", GOOD), ("2 two.jpg", BAD), ("3.jpg", GOOD)], "b": [("4.jpg", BAD)]},
                         "val": {"a": [("5.jpg", GOOD)], "b": [("6.jpg", BAD), ("7.jpg", GOOD)]}}.items():
        for cls, items in files.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for name, data in items:
                (root / split / cls / name).write_bytes(data)


def test_check_dataset_counts_folder_and_filelist(tmp_path, capsys, monkeypatch):
    check = load_check_dataset()
    monkeypatch.setattr(check.importlib.util, "find_spec", lambda name: None)  # the PIL checker (no DALI)
    root = tmp_path / "data set"
    folder_dataset(root)
    assert check.detect_format(root) == "folder"
    assert check.main([str(root)]) == 1
    captured = capsys.readouterr()
    assert "nvidia-dali is not installed: checking with PIL" in captured.err
    out = captured.out.splitlines()
    assert sorted(line.split(":")[0] for line in out if line.startswith("BAD ")) == sorted(
        f"BAD {root / p}" for p in ("train/a/2 two.jpg", "train/b/4.jpg", "val/b/6.jpg"))
    assert "train: 2 of 4 images do not decode" in out and "val: 1 of 3 images do not decode" in out
    assert out[-1] == f"{root} (folder): 3 of 7 files do not decode"

    (root / "train.txt").write_text("train/a/1.jpg 0\ntrain/b/4.jpg 1\n")
    (root / "val.txt").write_text("val/a/5.jpg 0\nval/b/7.jpg 1\nval/b/6.jpg 1\n")
    assert check.detect_format(root) == "filelist"
    assert check.main([str(root), "--splits", "val"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{root} (filelist): 1 of 3 files do not decode"
    assert check.main([str(root), "--format", "filelist", "--splits", "train", "val"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == f"{root} (filelist): 2 of 5 files do not decode"
    (root / "val.txt").write_text("val/a/5.jpg 0\n")
    assert check.main([str(root), "--splits", "val"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{root} (filelist): 0 of 1 files do not decode"


def test_check_dataset_webdataset(tmp_path, capsys, monkeypatch):
    import tarfile

    check = load_check_dataset()
    monkeypatch.setattr(check.importlib.util, "find_spec", lambda name: None)
    for split, items in {"train": [("k1", GOOD), ("k 2", BAD)], "val": [("k3", BAD), ("k4", GOOD), ("k5", BAD)]}.items():
        (tmp_path / split).mkdir()
        with tarfile.open(tmp_path / split / "shard-00000.tar", "w") as tar:
            for key, data in items:
                for ext, payload in (("jpg", data), ("label", b"\0" * 8)):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    assert check.detect_format(tmp_path) == "webdataset"
    assert check.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"BAD {tmp_path / 'train' / 'shard-00000.tar'}:k 2.jpg" in [line.split(": ")[0] for line in out]
    assert "train: 1 of 2 images do not decode" in out and "val: 2 of 3 images do not decode" in out
    assert out[-1] == f"{tmp_path} (webdataset): 3 of 5 files do not decode"


def test_reference_defaults_are_the_documented_ones():
    """alpha 0.5 and the scale clamp at 10 (ICD), theta 2 and eps 1e-5 (CCD): the defaults callers rely on."""
    gen = torch.Generator().manual_seed(0)
    z_s = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    z_t = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    bias = torch.tensor(0.3, dtype=torch.float64)
    for log_scale in (1.0, math.log(10.0) + 0.5):  # below and above the clamp
        ls = torch.tensor(log_scale, dtype=torch.float64)
        explicit = reference.icd_loss(z_s, z_t, ls, bias, alpha=0.5, max_scale=10.0)
        torch.testing.assert_close(reference.icd_loss(z_s, z_t, ls, bias), explicit)
    f_s, f_t = torch.randn(7, 4, generator=gen, dtype=torch.float64), torch.randn(7, 4, generator=gen, dtype=torch.float64)
    f_s[:, 0] = 1e-3 * f_s[:, 0]  # a small-variance channel: eps matters
    torch.testing.assert_close(reference.ccd_loss(f_s, f_t), reference.ccd_loss(f_s, f_t, theta=2.0, eps=1e-5))
    torch.testing.assert_close(reference.standardize(f_s), reference.standardize(f_s, eps=1e-5))
    assert not torch.allclose(reference.ccd_loss(f_s, f_t, eps=1e-2), reference.ccd_loss(f_s, f_t))


def test_check_dataset_progress_and_decoder_choice(tmp_path, capsys):
    check = load_check_dataset()
    counter = [0]
    assert sum(1 for _ in check.counted(iter(range(20001)), counter)) == 20001 and counter == [20001]
    assert capsys.readouterr().err.splitlines() == ["  ... 10000 images checked", "  ... 20000 images checked"]
    root = tmp_path / "d"
    folder_dataset(root)
    assert check.main([str(root), "--splits", "train"]) == 1  # DALI is installed here: its CPU decoder
    captured = capsys.readouterr()
    assert "checking with PIL" not in captured.err
    assert captured.out.splitlines()[-1] == f"{root} (folder): 2 of 4 files do not decode"
