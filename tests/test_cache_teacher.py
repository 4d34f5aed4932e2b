"""launch/cache_teacher.py: its flags, its teacher, one epoch written from a real (tiny) teacher, its val
evaluation. The pass end to end, under `accelerate launch`: tests/teacher_cache/test_runs.py."""
import contextlib
import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import REPO, tiny_run_args
from pipeline.errors import BadInputError
from pipeline.models import create_network
from pipeline.teacher_cache.encode import encode_records
from pipeline.teacher_cache.manifest import Manifest, RecordSpec
from pipeline.teacher_cache.reader import CacheReader
from pipeline.teacher_cache.storage import finish, open_shard

spec_ = importlib.util.spec_from_file_location("cache_teacher", REPO / "launch" / "cache_teacher.py")
cache_teacher = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(cache_teacher)


def flags(tmp_path, tiny_teacher, *extra):
    return tiny_run_args(tmp_path / "runs", tiny_teacher, **{"teacher.cache": str(tmp_path / "cache")}) + list(extra)


def test_defaults_follow_the_config(tmp_path, tiny_teacher):
    cfg, opts = cache_teacher.parse(flags(tmp_path, tiny_teacher, "--method", "kd", "--kd.temperature", "2"))
    assert (opts.epochs, opts.views, opts.batch_size) == (cfg.train.epochs, 1, 256)
    assert sorted(set(opts.temperatures)) == [2.0, 4.0]  # kd's 2, and dkd's and slkd's 4 for other runs
    assert cache_teacher.parse(flags(tmp_path, tiny_teacher, "--method", "dkd+kd"))[1].views == 2
    _, opts = cache_teacher.parse(flags(tmp_path, tiny_teacher, "--epochs", "7", "--views", "1",
                                        "--temperatures", "1,3.5"))
    assert (opts.epochs, opts.views, opts.temperatures) == (7, 1, [1.0, 3.5])


@pytest.mark.parametrize("extra, words", [
    (["--teacher.cache", ""], "teacher.cache is empty"),
    (["--temperatures", "4,x"], "--temperatures must be comma-separated numbers, got '4,x'"),
    (["--temperatures", "0"], "--temperatures must be > 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, tiny_teacher, capsys, extra, words):
    with pytest.raises(SystemExit) as info:
        cache_teacher.main(flags(tmp_path, tiny_teacher, *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0]


def test_the_teacher_is_built_frozen_and_folded_like_the_trainers(tmp_path, tiny_teacher):
    cfg, _ = cache_teacher.parse(flags(tmp_path, tiny_teacher))
    teacher, run = cache_teacher.build_teacher(cfg, 10, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    plain = create_network(cfg.teacher, 10, cfg.data.mean, cfg.data.std).eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (y, f), (y_ref, f_ref) = run(x), plain(x)
    assert (y - y_ref).norm() / y_ref.norm() < 1e-4 and (f - f_ref).norm() / f_ref.norm() < 1e-4
    cfg.teacher.checkpoint = ""
    with pytest.raises(BadInputError, match="needs a teacher"):
        cache_teacher.build_teacher(cfg, 10, torch.device("cpu"))


def test_write_epoch_stores_the_teachers_outputs_on_each_view(tmp_path, tiny_teacher):
    """Two ranks' plans of 7 samples, two views, batches of 2 with padding: every record read back equals
    the teacher run here on that sample's view."""
    cfg, _ = cache_teacher.parse(flags(tmp_path, tiny_teacher))
    teacher, run = cache_teacher.build_teacher(cfg, 10, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(7, 2, 3, 16, 16, generator=gen)  # (sample, view, ...)
    spec = RecordSpec.create(views=2, topk=3, num_classes=10, temperatures=[4.0], feature_dim=teacher.feature_dim)
    manifest = Manifest(made_from={}, record=spec, epochs=1, samples=7, world=2, batch_size=2)
    for rank in range(2):
        mine = np.arange(rank, 7, 2)
        index = np.resize(mine, 4)  # padded with repeats
        valid = np.arange(4) < len(mine)
        batches = [{"images": images[index[s:s + 2]].transpose(0, 1).reshape(4, 3, 16, 16),  # view-major
                    "index": torch.from_numpy(index[s:s + 2]), "valid": torch.from_numpy(valid[s:s + 2])}
                   for s in (0, 2)]
        shard = open_shard(tmp_path, manifest, 0, rank)
        cache_teacher.write_epoch(shard, batches, run, spec, contextlib.nullcontext)
    finish(tmp_path, manifest, None)
    got = CacheReader(tmp_path).records(0, np.arange(7), views=2)
    for v in range(2):
        with torch.no_grad():
            y, f = run(images[:, v])
        expected = encode_records(y, f, 1, 3, [4.0])[:, 0]
        assert np.array_equal(got[:, v]["classes"], expected["classes"]), v
        for name in ("values", "tail", "features"):
            a, b = got[:, v][name].astype(np.float64), expected[name].astype(np.float64)
            assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b), (v, name)
        assert np.linalg.norm(got[:, v]["features"] - f.numpy()) <= 1e-3 * np.linalg.norm(f.numpy())


def test_val_evaluation_counts_each_valid_image_once():
    logits = torch.tensor([[0.0, 5, 1, 2, 3, 4, 0], [9.0, 0, 1, 2, 3, 4, 5], [0.0, 1, 2, 3, 4, 5, 6]])
    labels = torch.tensor([1, 6, 0])  # top-1 hit; top-5 hit (5 is 2nd); miss in top-5 (0 is 7th)
    batch = {"images": logits, "labels": labels, "valid": torch.tensor([True, True, True])}
    padded = {"images": logits[:1], "labels": labels[:1], "valid": torch.tensor([False])}
    loader = type("Val", (), {"set_epoch": lambda self, e: None, "__iter__": lambda self: iter([batch, padded])})()
    accelerator = SimpleNamespace(device=torch.device("cpu"), autocast=contextlib.nullcontext,
                                  reduce=lambda x, op: x)
    metrics = cache_teacher.evaluate(lambda x: (x, None), loader, accelerator)
    assert metrics == {"top1": 100 / 3, "top5": 200 / 3, "images": 3}
