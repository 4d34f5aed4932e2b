"""Both backends cut the windows views.py draws: for every format, one and two views, several epochs, the
window of every view is read back from its pixels (the colour images' green channel ramps left to right,
blue top to bottom, so a crop's ramps say where it came from and whether it was flipped) and compared
with the window views.py gives for the image's known size; and DALI's and torchvision's pixels agree
within what different decoders and resamplers explain."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_datasets import COLOUR_BASE, COLOUR_STEP  # noqa: E402

from pipeline.config import DataConfig  # noqa: E402
from pipeline.data import build_loaders  # noqa: E402
from pipeline.data.dali.webdataset import write_webdataset  # noqa: E402
from pipeline.data.views import view_windows  # noqa: E402

CPU = torch.device("cpu")
SIZE, MIN_AREA, SEED = 32, 0.25, 3
COLOUR_SIZES = [(120, 90), (90, 120), (100, 100), (160, 96)]  # (width, height) of image k: k % 4 (dali_datasets)
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def colour_formats(colour_root, tmp_path_factory):
    """The colour tree as folder, file list (lines in a shuffled order) and webdataset shards."""
    lists = tmp_path_factory.mktemp("colour_lists")
    files = sorted(p.relative_to(colour_root / "train") for p in (colour_root / "train").glob("*/*.jpg"))
    order = np.random.default_rng(2).permutation(len(files))
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("".join(f"{colour_root / split / files[i]} {int(files[i].stem) % 2}\n"
                                                    for i in order))
    shards = tmp_path_factory.mktemp("colour_shards")
    write_webdataset(colour_root, shards, per_shard=5)
    return {"folder": colour_root, "filelist": lists, "webdataset": shards}


def loaders(root, fmt, backend, views):
    cfg = DataConfig(root=str(root), backend=backend, format=fmt, image_size=SIZE, val_resize=SIZE, min_area=MIN_AREA,
                     mean=[0.5] * 3, std=[0.25] * 3, workers=1 if backend == "dali" else 0, aug_seed=SEED)
    return build_loaders(cfg, batch_size=4, views=views, seed=0, rank=0, world=1, device=CPU)[0]


def pixels(images: torch.Tensor) -> np.ndarray:
    return (images * 0.25 + 0.5).numpy() * 255


def read_window(image: np.ndarray, width: int, height: int) -> tuple[float, float, float, float, bool]:
    """(x, y, w, h, flipped) of a crop of a colour image, from its ramps: output column j (centre j + 0.5)
    samples source column x + (j + 0.5) w / SIZE - 0.5, whose green level is 255 * column / (width - 1)."""
    def axis(profile: np.ndarray, extent: int) -> tuple[float, float, bool]:
        j = np.arange(2, SIZE - 2)  # the resamplers treat the borders differently: fit the inside
        slope = np.polyfit(j, profile[2:SIZE - 2], 1)[0]
        flipped = slope < 0
        if flipped:
            profile = profile[::-1]
        slope, intercept = np.polyfit(j, profile[2:SIZE - 2], 1)
        scale = (extent - 1) / 255
        size = slope * scale * SIZE
        return intercept * scale - 0.5 * size / SIZE + 0.5, size, flipped

    x, w, flipped = axis(image[1].mean(axis=0), width)
    y, h, _ = axis(image[2].mean(axis=1), height)
    return x, y, w, h, flipped


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("fmt", ["folder", "filelist", "webdataset"])
def test_both_backends_cut_the_replayed_windows(colour_formats, fmt, views):
    root = colour_formats[fmt]
    dali, ref = loaders(root, fmt, "dali", views), loaders(root, fmt, "torch", views)
    worst = {"dali": 0.0, "torch": 0.0}
    for epoch in range(3):
        dali.set_epoch(epoch)
        ref.set_epoch(epoch)
        for a, b in zip(dali, ref, strict=True):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["labels"], b["labels"])
            index = a["index"].numpy()
            k = np.rint((pixels(a["images"])[:len(index), 0].mean(axis=(1, 2)) - COLOUR_BASE) / COLOUR_STEP)
            sizes = np.array([COLOUR_SIZES[int(i) % 4] for i in k])  # (width, height) from the image's identity
            expected = view_windows(SEED, epoch, index, sizes[:, 1], sizes[:, 0], views=views, min_area=MIN_AREA)
            for name, batch in (("dali", a), ("torch", b)):
                images = pixels(batch["images"]).reshape(views, len(index), 3, SIZE, SIZE)
                for v in range(views):
                    for n in range(len(index)):
                        x, y, w, h, flipped = read_window(images[v, n], *sizes[n])
                        gap = np.abs(np.array([x, y, w, h]) - expected.windows[n, v]).max()
                        worst[name] = max(worst[name], gap)
                        assert gap < 0.6 and flipped == expected.flips[n, v], (name, epoch, n, v)
            # the pixels agree, up to decoder and resampler differences
            diff = np.abs(pixels(a["images"]) - pixels(b["images"])).mean(axis=(1, 2, 3))
            assert diff.max() < 2, diff
    assert worst["dali"] > 0 and worst["torch"] > 0  # the read-back is an estimate, not an echo
