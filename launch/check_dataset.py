"""List every image of a dataset that does not decode: `python launch/check_dataset.py ROOT`.

ROOT is a dataset root as `data.root` takes it: train/ and val/ as class folders, as webdataset shards
(`*.tar`, see pipeline/data/dali/webdataset.py), or listed by `train.txt`/`val.txt` (file-list format).
The format is detected unless `--format` says. Images are decoded with DALI's CPU decoder (the training
decoder; PIL where DALI is not installed), so a file passing here does not stop training.
Prints one `BAD <file>: <reason>` line per bad image and a count; exits 1 when any is bad.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from pipeline.data.folder import list_image_folder  # noqa: E402

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")  # webdataset image components


def detect_format(root: Path) -> str:
    if any((root / "train").glob("*.tar")):
        return "webdataset"
    if (root / "train.txt").is_file():
        return "filelist"
    return "folder"


def split_items(root: Path, split: str, fmt: str) -> Iterator[tuple[str, bytes | Exception]]:
    """(name, encoded bytes or the error reading them) for every image of one split."""
    if fmt == "webdataset":
        for tar_path in sorted((root / split).glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if member.isfile() and member.name.split(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
                        yield f"{tar_path}:{member.name}", tar.extractfile(member).read()
        return
    if fmt == "filelist":
        from pipeline.data.filelist import read_file_lists

        listing = read_file_lists(root)[0 if split == "train" else 1]
    else:
        listing = list_image_folder(root / split)
    for f in listing.files:
        path = listing.root / f
        try:
            yield str(path), path.read_bytes()
        except OSError as e:
            yield str(path), e


def pil_undecodable(items: Iterable[tuple[str, bytes | Exception]]) -> list[tuple[str, str]]:
    from PIL import Image

    bad = []
    for name, data in items:
        if isinstance(data, Exception):
            bad.append((name, f"cannot read: {data}"))
            continue
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.convert("RGB")
        except Exception as e:
            bad.append((name, str(e)))
    return bad


def counted(items, counter: list[int]):
    for item in items:
        counter[0] += 1
        if counter[0] % 10000 == 0:
            print(f"  ... {counter[0]} images checked", file=sys.stderr, flush=True)
        yield item


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--format", choices=("auto", "folder", "filelist", "webdataset"), default="auto")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--threads", type=int, default=4, help="DALI decoding threads")
    args = parser.parse_args(argv)
    fmt = detect_format(args.root) if args.format == "auto" else args.format
    if importlib.util.find_spec("nvidia.dali") is not None:
        from pipeline.data.dali import find_undecodable

        def check(items):
            return find_undecodable(items, threads=args.threads)
    else:
        print("nvidia-dali is not installed: checking with PIL", file=sys.stderr)
        check = pil_undecodable
    total, bad_total = 0, 0
    for split in args.splits:
        count = [0]
        bad = check(counted(split_items(args.root, split, fmt), count))
        for name, reason in bad:
            print(f"BAD {name}: {reason}")
        print(f"{split}: {len(bad)} of {count[0]} images do not decode")
        total, bad_total = total + count[0], bad_total + len(bad)
    print(f"{args.root} ({fmt}): {bad_total} of {total} files do not decode")
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
