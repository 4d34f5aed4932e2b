"""bench/gpu_check.py's data checks: small datasets written on the spot, read by DALI on the training device
through `pipeline.data.build_loaders` (the loaders' one entry point), as the trainer reads them.

Datasets (under OUT/data, written once per run):
  plain/    ImageNet layout, 4 classes, 48 train and 5 val JPEGs each (48 x 40 px smooth colour fields); val's
            20 images in batches of 8 leave padding in the last batch
  awkward/  plain/ plus, in every split, a CMYK JPEG, a grayscale JPEG, a PNG named .JPEG and a 6000 x 4500 JPEG
  wds/      plain/ as webdataset shards with DALI index files (`python -m pipeline.data.dali`, 16 per tar)
Each check returns (detail, figures) or raises AssertionError (a failure). Without CUDA they run DALI's CPU
decoder (what can run there; the mixed decoder is the GPU node's to check), except CUDA_ONLY.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 48, 5
SIZE, VAL_RESIZE, BATCH = 32, 36, 8
LARGE = (6000, 4500)  # width, height: a 27-megapixel photo, beyond ImageNet's usual sizes
# The DALI pipelines of one process (train + val, data.workers 8) may hold at most this much after one batch
# each; issue 20 measured ~3.1 GiB of device and ~4.3 GiB of pinned host memory per rank before its fix.
MEMORY_LIMIT_GIB = {"device": 2.0, "host": 3.0}


def smooth_image(width: int, height: int, seed: int) -> np.ndarray:
    """HxWx3 uint8: a colour gradient (compresses well even when huge, decodes to every pixel)."""
    a, b, c = np.random.default_rng(seed).uniform(0.2, 1.0, 3)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (255 * a * np.arange(width) / width).astype(np.uint8)[None, :]
    image[..., 1] = (255 * b * np.arange(height) / height).astype(np.uint8)[:, None]
    image[..., 2] = int(255 * c)
    return image


def write_datasets(out: Path) -> dict[str, Path]:
    from PIL import Image

    roots = {name: out / name for name in ("plain", "awkward", "wds")}
    if (out / "done").is_file():
        return roots
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c in range(CLASSES):
            for i in range(count):
                image = Image.fromarray(smooth_image(48, 40, seed=1000 * c + i + (0 if split == "train" else 500)))
                for name in ("plain", "awkward"):
                    folder = roots[name] / split / f"class{c}"
                    folder.mkdir(parents=True, exist_ok=True)
                    image.save(folder / f"{i:03d}.JPEG", quality=90)
        folder = roots["awkward"] / split / "class0"
        rgb = Image.fromarray(smooth_image(64, 48, seed=7))
        rgb.convert("CMYK").save(folder / "cmyk.JPEG", quality=90)
        rgb.convert("L").save(folder / "gray.JPEG", quality=90)
        rgb.save(folder / "png_named.JPEG", format="PNG")
        Image.fromarray(smooth_image(*LARGE, seed=8)).save(folder / "large.JPEG", quality=85)
    subprocess.run([sys.executable, "-m", "pipeline.data.dali", str(roots["plain"]), str(roots["wds"]),
                    "--per-shard", "16"], check=True, capture_output=True, text=True,
                   cwd=Path(__file__).resolve().parents[1])
    (out / "done").write_text("")
    return roots


def loaders(root: Path, device, *, views: int = 1, fmt: str = "folder", batch: int = BATCH, workers: int = 2):
    from pipeline.config import DataConfig
    from pipeline.data import build_loaders

    cfg = DataConfig(root=str(root), backend="dali", format=fmt, image_size=SIZE, val_resize=VAL_RESIZE,
                     min_area=0.25, workers=workers)
    return build_loaders(cfg, batch_size=batch, views=views, seed=0, rank=0, world=1, device=device)


def check_batch(batch: dict, views: int, device, batch_size: int = BATCH):
    import torch

    images = batch["images"]
    assert images.shape == (views * batch_size, 3, SIZE, SIZE), f"images {tuple(images.shape)}"
    assert images.device.type == device.type and images.dtype == torch.float32, (images.device, images.dtype)
    assert bool(torch.isfinite(images).all()), "non-finite pixels"
    assert batch["labels"].shape == batch["index"].shape == (batch_size,)
    if device.type == "cuda":
        assert images.is_contiguous(memory_format=torch.channels_last), "not channels_last on CUDA"


def two_views(roots, device):
    train, _ = loaders(roots["plain"], device, views=2)
    train.set_epoch(0)
    batch = next(iter(train))
    check_batch(batch, 2, device)
    a, b = batch["images"].float().chunk(2)
    differ = int(((a - b).abs().flatten(1).amax(1) > 0).sum())
    assert differ >= BATCH // 2, f"only {differ} of {BATCH} samples have two different views"
    return f"two views of {BATCH} images, {differ} pairs differ", {"pairs_differing": differ}


def every_val_image_once(val, expected: int, evaluations: int = 2) -> list[list[int]]:
    """The valid samples of each of `evaluations` passes, sorted; each must be 0..expected-1 once."""
    seen_all = []
    for _ in range(evaluations):
        val.set_epoch(0)
        seen = []
        for batch in val:
            check_batch(batch, 1, batch["images"].device, batch_size=batch["labels"].shape[0])
            seen += batch["index"][batch["valid"]].tolist()
        assert sorted(seen) == list(range(expected)), f"val indices {sorted(seen)} (expected 0..{expected - 1} once)"
        seen_all.append(sorted(seen))
    return seen_all


def validation(roots, device):
    _, val = loaders(roots["plain"], device)
    every_val_image_once(val, CLASSES * VAL_PER_CLASS)
    return f"two evaluations, each of the {CLASSES * VAL_PER_CLASS} val images once (padding masked)", {}


def webdataset(roots, device):
    train, val = loaders(roots["wds"], device, fmt="webdataset")
    train.set_epoch(0)
    check_batch(next(iter(train)), 1, device)
    every_val_image_once(val, CLASSES * VAL_PER_CLASS)
    return "a train batch; two evaluations, each val image once", {}


def resume_mid_epoch(roots, device):
    """What the trainer does: save the loader's state after step 2, rebuild, load it, start the epoch at step 2."""
    import torch

    train, _ = loaders(roots["plain"], device)
    train.set_epoch(0)
    batches = iter(train)
    for _ in range(2):
        next(batches)
    state = train.state_dict() if hasattr(train, "state_dict") else None
    expected = next(batches)
    resumed, _ = loaders(roots["plain"], device)
    if state is not None:
        resumed.load_state_dict(state, where="gpu_check")
    resumed.set_epoch(0, start_step=2)
    got = next(iter(resumed))
    assert torch.equal(got["index"].cpu(), expected["index"].cpu()), "another sample order after the resume"
    diff = float((got["images"].float() - expected["images"].float()).abs().max())
    assert diff == 0.0, f"the resumed batch's pixels differ by up to {diff}"
    return "step 3 after a resume at step 2: the same samples and pixels", {"max_abs_diff": diff}


def awkward_jpegs(roots, device):
    train, val = loaders(roots["awkward"], device, batch=4)
    train.set_epoch(0)
    steps = 0
    for batch in train:
        check_batch(batch, 1, device, 4)
        steps += 1
    n_val = CLASSES * VAL_PER_CLASS + 4
    every_val_image_once(val, n_val, evaluations=1)
    return (f"CMYK, grayscale, PNG named .JPEG, {LARGE[0]} x {LARGE[1]}: a train epoch ({steps} steps) and every "
            f"val image ({n_val}) decoded"), {"train_steps": steps}


def memory(roots, device):
    """Device memory (free memory before and after, which sees DALI's own allocator) and host memory (the
    process's resident set, which holds pinned buffers) of both DALI pipelines, after one batch each."""
    import psutil
    import torch

    torch.cuda.synchronize()
    free0, rss0 = torch.cuda.mem_get_info()[0], psutil.Process().memory_info().rss
    train, val = loaders(roots["plain"], device, workers=8)
    train.set_epoch(0)
    next(iter(train))
    val.set_epoch(0)
    next(iter(val))
    torch.cuda.synchronize()
    held = {"device": (free0 - torch.cuda.mem_get_info()[0]) / 2**30,
            "host": (psutil.Process().memory_info().rss - rss0) / 2**30}
    over = [f"{k} {v:.2f} GiB > {MEMORY_LIMIT_GIB[k]}" for k, v in held.items() if v > MEMORY_LIMIT_GIB[k]]
    assert not over, f"the two DALI pipelines hold {', '.join(over)} (8 threads)"
    return (f"train + val pipelines, 8 threads: {held['device']:.2f} GiB device, {held['host']:.2f} GiB host "
            f"(limits {MEMORY_LIMIT_GIB})"), {k + "_gib": v for k, v in held.items()}


CUDA_ONLY = {"dali_memory"}
CHECKS = {"dali_two_views": two_views, "dali_validation": validation, "dali_webdataset": webdataset,
          "dali_resume_mid_epoch": resume_mid_epoch, "dali_awkward_jpegs": awkward_jpegs, "dali_memory": memory}
