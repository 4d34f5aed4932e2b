"""What differs between DALI's and torchvision's RandAugment operations when both apply the same replayed draw.

    .venv/bin/python bench/rand_augment_backends.py [--size 224] [--magnitude 9]

Data: the foolbox ImageNet photos re-encoded at typical ImageNet sizes (bench/loaders.py's dataset), 28 images,
the whole image resized to `--size` px (data.min_area 1). Image i gets operation i % 14 of
pipeline/data/rand_augment.OPS with the sign (i // 14) (so every operation once with each sign), one
operation at magnitude bin `--magnitude` of 31, through the project's loaders: DALI's graph
(pipeline/data/dali/rand_augment.py) and torchvision's operations (`TorchvisionRandAugment`).
Columns, mean |difference| per pixel in grey levels (0..255), averaged over the two signs:
  effect       torchvision with the operation against torchvision without it: how much the operation changes
  DALI vs tv   the two backends, same operation and sign: what the implementations leave different
  crossed sign DALI against torchvision with the other sign: what a sign convention error would look like
  no RA        the two backends without RandAugment: the decoders' and resamplers' own difference
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import load_average, markdown_table  # noqa: E402
from loaders import make_dataset  # noqa: E402
from pipeline.config import DataConfig  # noqa: E402
from pipeline.data import build_loaders, planned, torch_loader  # noqa: E402
from pipeline.data.rand_augment import OPS, RandAugmentSpec  # noqa: E402


def forced(flip_sign: bool):
    def draws(aug_seed, epoch, index, *, views, num_ops):
        index = np.asarray(index)
        ops, negate = index % len(OPS), (index // len(OPS) + flip_sign) % 2
        shape = (len(index), views, num_ops)
        return (np.broadcast_to(ops[:, None, None], shape).astype(np.int32),
                np.broadcast_to(negate[:, None, None], shape).astype(np.int32))
    return draws


def images(root: Path, backend: str, size: int, magnitude: int | None, flip_sign: bool = False) -> dict[int, torch.Tensor]:
    planned.rand_augment_draws = torch_loader.rand_augment_draws = forced(flip_sign)
    cfg = DataConfig(root=str(root), backend=backend, image_size=size, val_resize=size, min_area=1.0,
                     mean=[0.0] * 3, std=[1 / 255] * 3, workers=1 if backend == "dali" else 0)
    train = build_loaders(cfg, batch_size=4, views=1, seed=0, rank=0, world=1, device=torch.device("cpu"))[0]
    train.set_augment(None, RandAugmentSpec(1, magnitude) if magnitude is not None else None)
    train.set_epoch(0)
    return {i: img for batch in train for i, img in zip(batch["index"].tolist(), batch["images"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--magnitude", type=int, default=9)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp), 2 * len(OPS))
        (root / "val").symlink_to(root / "train")
        dali = images(root, "dali", args.size, args.magnitude)
        tv = images(root, "torch", args.size, args.magnitude)
        tv_crossed = images(root, "torch", args.size, args.magnitude, flip_sign=True)
        dali_plain, tv_plain = images(root, "dali", args.size, None), images(root, "torch", args.size, None)

    def gap(a, b, ids):
        return float(np.mean([(a[i] - b[i]).abs().mean().item() for i in ids]))

    rows = []
    for k, name in enumerate(OPS):
        ids = [i for i in dali if i % len(OPS) == k]
        rows.append([name, round(gap(tv, tv_plain, ids), 2), round(gap(dali, tv, ids), 2),
                     round(gap(dali, tv_crossed, ids), 2), round(gap(dali_plain, tv_plain, ids), 2)])
    print(f"RandAugment, one operation at magnitude {args.magnitude}/30, {args.size} px, {len(dali)} images; "
          f"load average {load_average():.1f}")
    print(markdown_table(["operation", "effect", "DALI vs tv", "crossed sign", "no RA"], rows))


if __name__ == "__main__":
    main()
