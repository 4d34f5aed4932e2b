"""The DALI loaders on CPU DALI (device_id=None): batch format, agreement with the torchvision loader,
two views, exact sharding, resume, bad files, the webdataset and file-list readers, check_dataset."""
from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline.config import DataConfig  # noqa: E402
from pipeline.data import build_loaders  # noqa: E402
from pipeline.data.dali import DaliLoader, build_dali_loaders, find_undecodable, read_files  # noqa: E402
from pipeline.data.dali.webdataset import list_shards, write_webdataset  # noqa: E402
from pipeline.data.demo import prepare_demo_data  # noqa: E402
from pipeline.data.folder import list_image_folder  # noqa: E402
from pipeline.data.sharding import train_indices, train_steps  # noqa: E402
from pipeline.data.torch_loader import TorchLoader  # noqa: E402
from dali_datasets import COLOUR_BASE, COLOUR_STEP, foolbox_imagenet_files, write_imagenet_tree  # noqa: E402

CPU = torch.device("cpu")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
pytestmark = pytest.mark.timeout(120)  # a loader that hangs fails instead of blocking the suite


def loaders(root, *, views=1, batch_size=4, image_size=64, val_resize=72, rank=0, world=1, seed=0, workers=2,
            fmt="folder", per_class=0, val_per_class=0, min_area=0.08):
    cfg = DataConfig(root=str(root), backend="dali", format=fmt, per_class=per_class, val_per_class=val_per_class)
    return build_dali_loaders(cfg, Path(root), views=views, batch_size=batch_size, image_size=image_size,
                              val_resize=val_resize, min_area=min_area, mean=MEAN, std=STD, workers=workers,
                              seed=seed, rank=rank, world=world, device=CPU)


def torch_val(listing, batch_size, image_size, val_resize):
    return TorchLoader(listing, train=False, views=1, batch_size=batch_size, image_size=image_size,
                       val_resize=val_resize, min_area=0.08, mean=MEAN, std=STD, workers=0, seed=0, rank=0,
                       world=1, device=CPU)


def first_view(batch: dict) -> torch.Tensor:
    """The torchvision loader's first view, in either batch format (`images`, or the older `views` list)."""
    return batch["images"]


def pixels(view: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: B x 3 x H x W on 0..255."""
    return (view * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255


# ---- format and normalisation ----
@pytest.mark.parametrize("views", [1, 2])
def test_train_batches_have_the_loader_format(imagenet_root, views):
    train, val = loaders(imagenet_root, views=views, batch_size=4, image_size=64)
    listing = list_image_folder(imagenet_root / "train")
    assert train.num_classes == val.num_classes == len(listing.classes) == 19  # label 609 appears twice
    assert len(train) == 20 // 4
    batches = list(train)
    assert len(batches) == len(train)
    for batch in batches:
        images = batch["images"]  # one tensor, the views one after the other
        assert images.shape == (views * 4, 3, 64, 64) and images.dtype == torch.float32 and images.device == CPU
        assert images.is_contiguous()
        assert batch["labels"].dtype == batch["index"].dtype == torch.int64
        # the class is the listing's class of the sample the batch says it is
        assert batch["labels"].tolist() == [listing.labels[i] for i in batch["index"].tolist()]
        assert "valid" not in batch
    # normalised: pixels 0..255 map into [-mean/std, (1-mean)/std] per channel
    v = torch.cat([b["images"] for b in batches])
    low = -torch.tensor(MEAN) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert (v.amin(dim=(0, 2, 3)) >= low - 1e-4).all() and (v.amax(dim=(0, 2, 3)) <= high + 1e-4).all()


@pytest.mark.parametrize("image_size,val_resize", [(224, 256), (96, 110)])
def test_val_matches_torchvision_on_imagenet_jpegs(imagenet_root, image_size, val_resize):
    """Same resize-shorter-side + centre crop + normalise: DALI and torchvision agree to a grey level or so."""
    _, val = loaders(imagenet_root, batch_size=6, image_size=image_size, val_resize=val_resize)
    reference = torch_val(list_image_folder(imagenet_root / "val"), 6, image_size, val_resize)
    assert len(val) == len(reference)
    for ours, ref in zip(val, reference):
        assert torch.equal(ours["index"], ref["index"]) and torch.equal(ours["labels"], ref["labels"])
        assert torch.equal(ours["valid"], ref["valid"])
        a, b = pixels(ours["images"])[ours["valid"]], pixels(first_view(ref))[ours["valid"]]
        per_image = (a - b).abs().mean(dim=(1, 2, 3))  # grey levels
        # square images resize to the same grid: rounding only. A non-square one (1024 x 683) is
        # resized to 384 (DALI) vs 383 (torchvision truncates) columns: a sub-pixel shift, a few levels.
        # A channel swap, a missing crop or wrong scaling costs tens.
        assert per_image.median() < 0.5 and per_image.max() < 6
        # and the comparison can fail: a neighbouring sample differs by far more
        assert (a - b.roll(1, dims=0)).abs().mean() > 10


def test_demo_data_subset(tmp_path):
    """Fashion-MNIST demo JPEGs (28x28, configs use image_size 28, val_resize 32) with a per_class subset."""
    root = prepare_demo_data(DataConfig().demo_dir)
    train, val = loaders(root, views=2, batch_size=8, image_size=28, val_resize=32, per_class=4, val_per_class=2)
    assert train.num_classes == val.num_classes == 10
    assert train.num_samples == 40 and val.num_samples == 20 and len(train) == 5
    batch = next(iter(train))
    assert batch["images"].shape == (2 * 8, 3, 28, 28)
    reference = torch_val(list_image_folder(root / "val", 2), 8, 28, 32)
    for ours, ref in zip(val, reference):
        assert torch.equal(ours["index"], ref["index"])
        diff = (pixels(ours["images"]) - pixels(first_view(ref))).abs()[ours["valid"]]
        assert diff.mean(dim=(1, 2, 3)).max() < 2  # 28 -> 32 -> 28 px: rounding only


# ---- two views ----
def identity(view: torch.Tensor) -> torch.Tensor:
    """Image number k of each sample from its red level (see conftest.colour_root)."""
    red = pixels(view)[:, 0].mean(dim=(1, 2))
    return ((red - COLOUR_BASE) / COLOUR_STEP).round().long()


def test_two_views_are_two_crops_of_the_same_image(colour_root):
    train, _ = loaders(colour_root, views=2, batch_size=8, image_size=32, min_area=0.08)
    listing = list_image_folder(colour_root / "train")
    flips = []
    for batch in train:
        k = torch.tensor([int(Path(listing.files[i]).stem) for i in batch["index"].tolist()])
        v0, v1 = batch["images"].chunk(2)  # view-major: view 0's 8 images, then view 1's
        # both views show the image the index names
        assert torch.equal(identity(v0), k) and torch.equal(identity(v1), k)
        # ... through different windows: position (mean) and size (spread) of the green/blue ramps
        sig = [torch.cat([pixels(v)[:, 1:].mean(dim=(2, 3)), pixels(v)[:, 1:].std(dim=(2, 3))], 1) for v in (v0, v1)]
        assert ((sig[0] - sig[1]).abs().amax(dim=1) > 2).all()
        for v in (v0, v1):  # green rises left to right unless the view was flipped
            green = pixels(v)[:, 1].mean(dim=1)
            flips += (green[:, -1] < green[:, 0]).tolist()
    assert 0 < sum(flips) < len(flips)  # flips happen, independently of the crop


# ---- sharding ----
def test_two_ranks_cover_each_train_epoch_once_in_new_orders(imagenet_root):
    world, batch_size = 2, 5  # 20 images: 2 steps of 5 per rank, nothing dropped
    ranks = [loaders(imagenet_root, batch_size=batch_size, rank=r, world=world, seed=3)[0] for r in range(world)]
    assert [len(t) for t in ranks] == [train_steps(20, batch_size, world)] * world == [2, 2]
    orders = []
    for epoch in range(2):
        seen = []
        for rank, train in enumerate(ranks):
            train.set_epoch(epoch)
            got = [b["index"].numpy() for b in train]
            # exactly the torchvision loader's plan for this rank and epoch
            np.testing.assert_array_equal(np.stack(got), train_indices(20, batch_size, rank, world, 3, epoch))
            seen += np.concatenate(got).tolist()
        assert sorted(seen) == list(range(20))
        orders.append(seen)
    assert orders[0] != orders[1]


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
@pytest.mark.parametrize("world", [2, 3])
def test_validation_counts_every_image_once_across_ranks(imagenet_root, webdataset_root, fmt, world):
    root = imagenet_root if fmt == "folder" else webdataset_root
    counted, steps = [], []
    for rank in range(world):
        _, val = loaders(root, batch_size=3, rank=rank, world=world, fmt=fmt)
        batches = list(val)
        steps.append(len(batches))
        for b in batches:
            assert b["images"].shape[0] == 3  # padded to whole batches
            counted += b["index"][b["valid"]].tolist()
    assert len(set(steps)) == 1  # the same number of steps on every rank
    assert sorted(counted) == list(range(20))  # each image exactly once: padding is masked, never counted


# ---- resume: see test_dali_resume.py ----


# ---- bad files ----
@pytest.fixture
def broken_root(tmp_path):
    """The ImageNet tree with one truncated JPEG in train/ and one text file named .jpg in val/."""
    root = write_imagenet_tree(tmp_path / "broken", foolbox_imagenet_files())
    truncated = next((root / "train").glob("*/imagenet_05_*.jpg"))
    truncated.write_bytes(truncated.read_bytes()[:4000])
    not_an_image = next((root / "val").glob("*/imagenet_11_*.jpg"))
    not_an_image.write_text("this is not a JPEG")
    return root, truncated, not_an_image


@pytest.mark.parametrize("views", [1, 2])
def test_a_truncated_jpeg_stops_training_with_its_name(broken_root, views):
    root, truncated, _ = broken_root
    train, _ = loaders(root, views=views, batch_size=4)
    with pytest.raises(RuntimeError, match=re.escape(str(truncated))):
        for _ in train:
            pass


def test_a_non_image_file_stops_validation_with_its_name(broken_root):
    root, _, not_an_image = broken_root
    _, val = loaders(root, batch_size=4)
    with pytest.raises(RuntimeError, match=re.escape(str(not_an_image))):
        for _ in val:
            pass


def test_webdataset_errors_name_the_tar_member(broken_root, tmp_path):
    """Train (shuffled: DALI names the sample) and val (non-image bytes: found by re-decoding)."""
    root, truncated, not_an_image = broken_root
    write_webdataset(root, tmp_path / "wds", per_shard=6)
    train, val = loaders(tmp_path / "wds", fmt="webdataset", batch_size=4)
    for loader, bad in ((train, truncated), (val, not_an_image)):
        split = bad.parents[1]
        index = list_image_folder(split).files.index(str(bad.relative_to(split)))  # the writer's key
        with pytest.raises(RuntimeError, match=rf"shard-\d+\.tar:(\d+:)?{index:08d}\.jpg"):
            for _ in loader:
                pass


def test_find_undecodable_names_only_the_bad_files(broken_root):
    root, truncated, not_an_image = broken_root
    paths = sorted(str(p) for p in root.glob("*/*/*.jpg")) + [str(root / "missing.jpg")]
    bad = dict(find_undecodable(read_files(paths), batch_size=8))
    assert sorted(bad) == sorted([str(truncated), str(not_an_image), str(root / "missing.jpg")])
    assert bad[str(root / "missing.jpg")].startswith("cannot read")


def check_dataset_main():
    """launch/check_dataset.py's main(), loaded by path (launch/ is a script folder, not a package)."""
    path = Path(__file__).resolve().parents[2] / "launch" / "check_dataset.py"
    spec = importlib.util.spec_from_file_location("check_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_check_dataset_lists_bad_files_and_fails(broken_root, imagenet_root, capsys):
    main = check_dataset_main()
    root, truncated, not_an_image = broken_root
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert str(truncated) in out and str(not_an_image) in out
    assert re.search(r"\b2 of 40\b", out)
    assert main([str(imagenet_root)]) == 0
    assert re.search(r"\b0 of 40\b", capsys.readouterr().out)


def test_check_dataset_reads_webdataset_shards(tmp_path, broken_root, capsys):
    main = check_dataset_main()
    root, truncated, _ = broken_root
    write_webdataset(root, tmp_path / "wds", per_shard=6)
    assert main([str(tmp_path / "wds")]) == 1
    out = capsys.readouterr().out
    assert re.search(r"\b2 of 40\b", out) and ".tar:" in out


# ---- other readers ----
def test_webdataset_shards_have_dali_indexes(webdataset_root):
    shards = list_shards(webdataset_root / "train")
    assert [t.name for t in shards.tars] == [f"shard-0000{i}.tar" for i in range(4)]
    assert shards.sizes == [6, 6, 6, 2] and shards.num_classes == 19


def test_webdataset_reads_the_same_images_as_the_folder_reader(imagenet_root, webdataset_root):
    _, folder_val = loaders(imagenet_root, batch_size=4)
    _, shard_val = loaders(webdataset_root, batch_size=4, fmt="webdataset")
    assert len(folder_val) == len(shard_val) == 5
    for a, b in zip(folder_val, shard_val):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["valid"], b["valid"])
        assert torch.equal(a["images"], b["images"])  # same bytes, same decoder: identical pixels


def test_webdataset_train_epochs_are_the_folder_readers(imagenet_root, webdataset_root):
    """The shards (written in a shuffled order) are read by dataset index through the same plan: per rank and
    epoch the folder reader's samples, windows and flips, so the same pixels (same bytes, same decoder)."""
    world, batch_size = 2, 3
    for rank in range(world):
        shards, _ = loaders(webdataset_root, views=2, batch_size=batch_size, rank=rank, world=world, fmt="webdataset")
        folder, _ = loaders(imagenet_root, views=2, batch_size=batch_size, rank=rank, world=world)
        for epoch in range(2):
            shards.set_epoch(epoch)
            folder.set_epoch(epoch)
            batches = list(shards)
            assert len(batches) == train_steps(20, batch_size, world) == 3
            assert np.array_equal(np.stack([b["index"].numpy() for b in batches]),
                                  train_indices(20, batch_size, rank, world, 0, epoch))
            for a, b in zip(batches, folder, strict=True):
                assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["images"], b["images"])


def test_file_list_format(imagenet_root, tmp_path):
    """`train.txt`/`val.txt` lines `<path> <class>`: index = line number, class from the line."""
    listing = list_image_folder(imagenet_root / "train")
    order = np.random.default_rng(0).permutation(len(listing))
    for split in ("train", "val"):
        lines = [f"{split}/{listing.files[i]} {i % 5}" for i in order]  # classes made up: 0..4
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
        shutil.copytree(imagenet_root / split, tmp_path / split)
    train, val = loaders(tmp_path, fmt="filelist", batch_size=4)
    assert train.num_classes == val.num_classes == 5
    _, folder_val = loaders(imagenet_root, batch_size=4)
    folder_views = torch.cat([b["images"] for b in folder_val])
    for b in val:
        assert b["labels"].tolist() == [int(order[i]) % 5 for i in b["index"].tolist()]
        # line i is folder sample order[i]: same pixels
        assert torch.equal(b["images"], folder_views[torch.as_tensor(order)[b["index"]]])


def test_build_loaders_picks_the_backend(imagenet_root):
    common = dict(batch_size=4, views=1, seed=0, rank=0, world=1, device=CPU)
    cfg = DataConfig(root=str(imagenet_root), image_size=64, val_resize=72, workers=1)
    for backend, kind in (("dali", DaliLoader), ("auto", DaliLoader), ("torch", TorchLoader)):
        cfg.backend = backend
        train, val = build_loaders(cfg, **common)
        assert isinstance(train, kind) and isinstance(val, kind)
    cfg.backend = "dali"
    assert next(iter(build_loaders(cfg, **common)[0]))["images"].shape == (4, 3, 64, 64)
