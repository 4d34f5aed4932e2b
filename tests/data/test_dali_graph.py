"""pipeline/data/dali/graph.py: nvJPEG's preallocation for ImageNet's largest image on the train decoder only,
and the whole-image decode path of one view (bench/loaders.py's comparison) cutting the same window as ROI
decode."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipeline.data.dali.graph import GraphSpec, decoder_args  # noqa: E402
from pipeline.data.dali.loader import DaliLoader  # noqa: E402
from pipeline.data.folder import list_image_folder  # noqa: E402

HINTS = {"device_memory_padding", "host_memory_padding", "preallocate_width_hint", "preallocate_height_hint"}


def spec(train: bool, device_id) -> GraphSpec:
    return GraphSpec(train=train, views=1, roi_decode=train, files=True, extras=0, batch_size=4, image_size=32,
                     val_resize=36, mean=[128.0] * 3, std=[64.0] * 3, threads=2, device_id=device_id)


def test_only_the_gpu_train_decoder_preallocates_for_the_largest_image():
    train, val = decoder_args(spec(True, 0)), decoder_args(spec(False, 0))
    assert train["device"] == val["device"] == "mixed"
    assert HINTS <= set(train) and train["preallocate_width_hint"] * train["preallocate_height_hint"] > 5000 ** 2
    assert not HINTS & set(val)  # DALI's defaults: buffers grow with the images actually seen
    cpu = decoder_args(spec(True, None))
    assert cpu["device"] == "cpu" and not HINTS & set(cpu)
    assert all(not a["adjust_orientation"] for a in (train, val, cpu))  # windows are drawn on the stored image


def test_whole_image_decode_cuts_the_roi_decodes_window(imagenet_root):
    listing = list_image_folder(imagenet_root / "train")
    common = dict(train=True, views=1, batch_size=5, image_size=48, val_resize=48, min_area=0.2, mean=[0.5] * 3,
                  std=[0.25] * 3, threads=1, seed=0, rank=0, world=1, device=torch.device("cpu"))
    roi, whole = DaliLoader(listing, **common), DaliLoader(listing, roi_decode=False, **common)
    assert roi.roi_decode and not whole.roi_decode
    for a, b in zip(roi, whole, strict=True):
        assert torch.equal(a["index"], b["index"])
        diff = ((a["images"] - b["images"]) * 0.25 * 255).abs().mean(dim=(1, 2, 3))
        assert diff.max() < 1, diff  # grey levels: the same window, up to decoding and edge filtering
        assert ((a["images"] - b["images"].roll(1, 0)) * 0.25 * 255).abs().mean() > 10  # another image is far
