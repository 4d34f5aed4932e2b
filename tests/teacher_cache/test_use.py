"""A run from a cache (pipeline/teacher_cache/use.py, the Trainer's hook, preflight): the run's teacher
identity, one-line refusals through the command line, the records of a batch's own samples reaching the
methods, and the rebuilt teacher under torch.compile."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from cache_fixtures import make_manifest, teacher_logits, write_cache
from pipeline.config import parse_args
from pipeline.data import dataset_root, dataset_sources
from pipeline.models import create_network
from pipeline.teacher_cache import use
from pipeline.teacher_cache.identity import data_identity, teacher_identity
from pipeline.teacher_cache.loader_hooks import train_listing
from pipeline.teacher_cache.rebuild import CachedTeacher, rebuild
from pipeline.trainer import Trainer
from tests.conftest import REPO, tiny_run_args

spec_ = importlib.util.spec_from_file_location("imagenet_launch", REPO / "launch" / "imagenet.py")
imagenet = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(imagenet)


def config(tmp_path, teacher, *extra, **overrides):
    return parse_args(tiny_run_args(tmp_path / "runs", teacher, **overrides) + list(extra))[0]


def matching_cache(tmp_path, teacher, views=1, feature_dim=0, epochs=2, decoder="torchvision-pil", **overrides):
    """A cache whose manifest says it was made from this run's teacher and data (synthetic records:
    cache_fixtures.teacher_logits of (epoch, index, view), K = classes)."""
    cfg = config(tmp_path, teacher, **overrides)
    names, labels, classes = train_listing(dataset_sources(cfg.data, dataset_root(cfg.data))[0])
    made_from = {**use.run_teacher_identity(cfg, classes), **data_identity(cfg, names, labels, classes)}
    manifest = make_manifest(samples=len(names), epochs=epochs, world=2, views=views, topk=classes,
                             classes=classes, temperatures=(), feature_dim=feature_dim, batch_size=16, **made_from)
    manifest.notes = {"teacher weights": str(teacher), use.DECODER: decoder}
    write_cache(tmp_path / "cache", manifest)
    return tmp_path / "cache"


def test_the_run_hashes_its_teacher_as_the_pass_does_once_and_leaves_the_rng_alone(tmp_path, tiny_teacher,
                                                                                    monkeypatch):
    teacher = tmp_path / "t.safetensors"
    teacher.write_bytes(tiny_teacher.read_bytes())
    cfg = config(tmp_path, teacher)
    before = torch.random.get_rng_state()
    identity = use.run_teacher_identity(cfg, 10)
    assert torch.equal(torch.random.get_rng_state(), before)
    built = create_network(cfg.teacher, 10, cfg.data.mean, cfg.data.std)  # the cache pass's teacher
    assert identity == teacher_identity(cfg, built)
    monkeypatch.setattr("pipeline.models.create_network", lambda *a: pytest.fail("built twice"))
    assert use.run_teacher_identity(cfg, 10) == identity  # remembered: preflight, then the Trainer
    monkeypatch.undo()
    torch.manual_seed(5)
    save_file(timm.create_model("resnet10t", num_classes=10).state_dict(), str(teacher))  # the file changed
    assert use.run_teacher_identity(cfg, 10)["teacher weights"] != identity["teacher weights"]


CASES = {  # what differs -> (flags of the run, words of its error)
    "teacher": (["--teacher.checkpoint", "OTHER"], "was made with teacher weights sha256:"),
    "aug_seed": (["--data.aug_seed", "5"], "was made with data.aug_seed 0, this run has 5"),
    "epochs": (["--train.epochs", "3"], "was made for 2 epochs, this run has train.epochs 3"),
    "views": (["--method", "dkd+kd"], "was made with 1 view(s) per sample, this run needs 2 (--method dkd+kd)"),
    "features": (["--method", "icd+kd"], "was made with teacher.cache_features false, this run needs the teacher's "
                                         "features (icd in --method icd+kd)"),
    "missing": (["--teacher.cache", "NOWHERE"], "no manifest.json there"),
    "no teacher": (["--teacher.checkpoint", "NOWHERE", "--teacher.train_if_missing", "true"],
                   "(teacher.checkpoint): a run from teacher.cache"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_cache_that_cannot_serve_the_run_stops_the_command_line_in_one_line(tmp_path, tiny_teacher, capsys, case):
    """launch/imagenet.py: exit 2 and one line naming both sides, before anything trains (train.baseline on:
    the student-alone run would come first)."""
    root = matching_cache(tmp_path, tiny_teacher, **{"data.aug_seed": 0})
    other = tmp_path / "other.safetensors"
    torch.manual_seed(9)
    save_file(timm.create_model("resnet10t", num_classes=10).state_dict(), str(other))
    flags, words = CASES[case]
    flags = [{"OTHER": str(other), "NOWHERE": str(tmp_path / "nowhere")}.get(f, f) for f in flags]
    argv = tiny_run_args(tmp_path / "runs", tiny_teacher, **{"data.aug_seed": 0, "teacher.cache": str(root),
                                                             "train.baseline": True}) + flags
    with pytest.raises(SystemExit) as info:
        imagenet.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and words in err[0], err
    if case == "teacher":  # both sides, each with where it came from
        assert f"({tiny_teacher}), this run has sha256:" in err[0] and err[0].endswith(f"({other})")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.jsonl"))


def test_a_batch_carries_its_own_samples_records_to_the_methods(tmp_path, tiny_teacher, caplog):
    """slkd from a cache: no teacher built, the teacher the methods see is cache_fixtures' logits of each
    batch sample at this epoch (to fp16 rounding), and the self-learning teachers train. The cache was
    made from images another decoder decoded: a warning."""
    root = matching_cache(tmp_path, tiny_teacher, decoder="dali-mixed", **{"data.aug_seed": 0})
    cfg = config(tmp_path, tiny_teacher, **{"data.aug_seed": 0, "teacher.cache": str(root), "method": "slkd"})
    trainer = Trainer(cfg)
    assert trainer.teacher is None and trainer.teacher_fn is None
    assert (f"teacher cache {root} was made from images decoded by dali-mixed, this run decodes with "
            "torchvision-pil") in caplog.text
    trainer.train_loader.set_epoch(1)
    batch = next(iter(trainer.train_loader))
    seen = trainer.teacher_outputs(batch, batch["images"]).logits_at(4.0)
    expected = teacher_logits(1, batch["index"].numpy(), 0)
    expected = expected - expected.max(dim=1, keepdim=True).values
    assert (seen - expected).abs().max() <= 2 ** -11 * expected.abs().max()
    sl1 = trainer.distiller.methods[0].sl1.model.fc.weight.detach().clone()
    terms = trainer.train_step(batch)
    assert {"slkd_teacher", "slkd_sl", "sl1", "sl2"} <= set(terms) and all(torch.isfinite(v) for v in terms.values())
    assert not torch.equal(trainer.distiller.methods[0].sl1.model.fc.weight, sl1)


def test_a_method_without_a_teacher_ignores_the_cache(tmp_path, tiny_teacher):
    cfg = config(tmp_path, tiny_teacher, **{"teacher.cache": str(tmp_path / "nowhere"), "method": "none"})
    trainer = Trainer(cfg)
    assert trainer.cache is None and trainer.teacher is None


def test_the_rebuilt_teacher_compiles_fullgraph():
    """The cache's part of a step under torch.compile (aot_eager; fullgraph: a host read or data-dependent
    Python would break the graph): the rebuild from a batch's records, and a CachedTeacher handed into a
    compiled function as the Trainer hands it to the compiled student step."""
    gen = torch.Generator().manual_seed(0)
    n, k, c, d = 6, 3, 10, 5
    extras = {"teacher_values": -torch.rand(n, k, generator=gen).sort(dim=1, descending=True).values.half(),
              "teacher_classes": torch.stack([torch.randperm(c, generator=gen)[:k] for _ in range(n)]).short(),
              "teacher_tail": torch.randn(n, 2, generator=gen), "teacher_features": torch.randn(n, d).half()}
    student = torch.randn(n, c, generator=gen)

    def loss(teacher, s):
        return (teacher.logits_at(1.0) * s).sum() + (teacher.logits_at(4.0).exp() * s).sum() + teacher.features.sum()

    def from_records(extras, s):
        return loss(rebuild(extras, c, [1.0, 4.0], [1.0, 4.0]), s)
    eager = from_records(extras, student)
    torch.testing.assert_close(torch.compile(from_records, backend="aot_eager", fullgraph=True)(extras, student), eager)
    teacher = rebuild(extras, c, [1.0, 4.0], [1.0, 4.0])
    assert isinstance(teacher, CachedTeacher)
    torch.testing.assert_close(torch.compile(loss, backend="aot_eager", fullgraph=True)(teacher, student), eager)
    exact = rebuild({**extras, "teacher_values": torch.zeros(n, c).half(),
                     "teacher_classes": torch.arange(c).repeat(n, 1).short()}, c, [], [4.0])
    torch.testing.assert_close(torch.compile(loss, backend="aot_eager", fullgraph=True)(exact, student),
                               loss(exact, student))
