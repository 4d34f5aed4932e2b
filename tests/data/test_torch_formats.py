"""The torchvision loader reads every data.format (folder, filelist, webdataset) with the DALI loader's
sample plan: the same samples, the same dataset indices and classes, every val image counted exactly once.
No DALI needed except to write the shards' index files (DALI's wds2idx) and for the side-by-side check."""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data import build_loaders
from pipeline.data.folder import list_image_folder
from pipeline.data.sharding import train_indices, train_steps
from pipeline.data.torch_loader import TorchLoader

CPU = torch.device("cpu")
HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
pytestmark = pytest.mark.timeout(120)


def loaders(root, fmt, *, backend="torch", views=1, batch_size=4, rank=0, world=1, seed=0):
    cfg = DataConfig(root=str(root), backend=backend, format=fmt, image_size=32, val_resize=36, workers=0)
    return build_loaders(cfg, batch_size=batch_size, views=views, seed=seed, rank=rank, world=world, device=CPU)


def images(batch) -> torch.Tensor:
    """The batch's first view, whichever batch layout the loader yields (`images` or the older `views`)."""
    return batch["images"][: len(batch["labels"])]


@pytest.fixture(scope="module")
def shard_root(imagenet_root, tmp_path_factory):
    pytest.importorskip("wds2idx", reason="the shard index files are written by DALI's wds2idx")
    from pipeline.data.dali.webdataset import write_webdataset

    root = tmp_path_factory.mktemp("torch_webdataset")
    write_webdataset(imagenet_root, root, per_shard=6)  # 20 samples -> tars of 6, 6, 6, 2
    return root


@pytest.fixture(scope="module")
def filelist_root(imagenet_root, tmp_path_factory):
    """train.txt / val.txt listing the folder's files in a shuffled order, with made-up classes i % 5."""
    root = tmp_path_factory.mktemp("filelist")
    listing = list_image_folder(imagenet_root / "train")
    order = np.random.default_rng(0).permutation(len(listing))
    for split in ("train", "val"):
        lines = [f"{split}/{listing.files[i]} {i % 5}" for i in order]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        shutil.copytree(imagenet_root / split, root / split)
    return root, order


def test_torch_webdataset_reads_the_same_samples_as_the_folder_reader(imagenet_root, shard_root):
    _, folder_val = loaders(imagenet_root, "folder")
    train, shard_val = loaders(shard_root, "webdataset")
    assert isinstance(shard_val, TorchLoader) and train.num_classes == 19 and train.num_samples == 20
    assert len(folder_val) == len(shard_val) == 5
    for a, b in zip(folder_val, shard_val):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["valid"], b["valid"])
        assert torch.equal(images(a), images(b))  # the same bytes through the same decoder


def test_torch_file_list_format(imagenet_root, filelist_root):
    """Index = line number, class from the line, pixels of the file the line names."""
    root, order = filelist_root
    train, val = loaders(root, "filelist")
    assert train.num_classes == val.num_classes == 5
    _, folder_val = loaders(imagenet_root, "folder")
    folder_images = torch.cat([images(b) for b in folder_val])
    seen = []
    for b in val:
        assert b["labels"].tolist() == [int(order[i]) % 5 for i in b["index"].tolist()]
        assert torch.equal(images(b), folder_images[torch.as_tensor(order)[b["index"]]])
        seen += b["index"][b["valid"]].tolist()
    assert sorted(seen) == list(range(20))


@pytest.mark.parametrize("fmt", ["folder", "filelist", "webdataset"])
@pytest.mark.parametrize("world", [2, 3])
def test_torch_validation_counts_every_image_once_across_ranks(imagenet_root, filelist_root, shard_root, fmt, world):
    root = {"folder": imagenet_root, "filelist": filelist_root[0], "webdataset": shard_root}[fmt]
    counted, steps = [], []
    for rank in range(world):
        _, val = loaders(root, fmt, batch_size=3, rank=rank, world=world)
        batches = list(val)
        steps.append(len(batches))
        for b in batches:
            assert len(b["labels"]) == 3  # padded to whole batches
            counted += b["index"][b["valid"]].tolist()
    assert len(set(steps)) == 1
    assert sorted(counted) == list(range(20))


def test_torch_webdataset_train_epochs(imagenet_root, shard_root):
    """Every rank runs train_steps steps; no sample twice in an epoch; labels are the samples' classes."""
    listing = list_image_folder(imagenet_root / "train")
    world, batch_size = 2, 3
    orders = []
    for epoch in range(2):
        seen = []
        for rank in range(world):
            train, _ = loaders(shard_root, "webdataset", views=2, batch_size=batch_size, rank=rank, world=world)
            train.set_epoch(epoch)
            batches = list(train)
            assert len(batches) == train_steps(20, batch_size, world) == 3
            for b in batches:
                assert b["labels"].tolist() == [listing.labels[i] for i in b["index"].tolist()]
                seen += b["index"].tolist()
        assert len(seen) == len(set(seen)) == 18
        orders.append(seen)
    assert orders[0] != orders[1]


@pytest.mark.skipif(not HAS_DALI, reason="side by side with the DALI loader")
@pytest.mark.parametrize("world", [1, 2])
def test_torch_and_dali_file_lists_read_the_same_plan(filelist_root, world):
    """filelist: per rank and epoch, the same train indices (sharding.train_indices) and the same val
    indices, classes and padding mask as the DALI loader."""
    root, _ = filelist_root
    for rank in range(world):
        ours = loaders(root, "filelist", batch_size=4, rank=rank, world=world, seed=5)
        dali = loaders(root, "filelist", backend="dali", batch_size=4, rank=rank, world=world, seed=5)
        for epoch in (0, 1):
            ours[0].set_epoch(epoch)
            dali[0].set_epoch(epoch)
            a = [b["index"].tolist() for b in ours[0]]
            assert a == [b["index"].tolist() for b in dali[0]]
            assert a == train_indices(20, 4, rank, world, 5, epoch).tolist()
        for a, b in zip(ours[1], dali[1], strict=True):
            for key in ("index", "labels", "valid"):
                assert torch.equal(a[key], b[key])


@pytest.mark.skipif(not HAS_DALI, reason="side by side with the DALI loader")
def test_torch_and_dali_webdataset_validation_agree(shard_root):
    ours, dali = loaders(shard_root, "webdataset")[1], loaders(shard_root, "webdataset", backend="dali")[1]
    for a, b in zip(ours, dali, strict=True):
        for key in ("index", "labels", "valid"):
            assert torch.equal(a[key], b[key])


def test_a_broken_sample_in_a_shard_is_named(shard_root, tmp_path):
    """A tar sample that does not decode stops the torchvision loader with `<tar>:<member>`."""
    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    tar = broken / "val" / "shard-00001.tar"
    line = (broken / "val" / "shard-00001.idx").read_text().splitlines()[2].split()  # sample 7's components
    offset, member = int(line[1]), line[3]
    data = bytearray(tar.read_bytes())
    data[offset:offset + 64] = b"\0" * 64  # wipe the JPEG header
    tar.write_bytes(bytes(data))
    _, val = loaders(broken, "webdataset")
    with pytest.raises(RuntimeError, match=f"shard-00001.tar:{member}"):
        for _ in val:
            pass
