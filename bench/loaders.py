"""Images/s of the DALI CPU loader and the torchvision loader on the same cores, same transforms; and
DALI's ROI decode against whole-image decode on the 20 real ImageNet JPEGs.

    .venv/bin/python bench/loaders.py [--images 640] [--threads 2 3] [--epochs 3] [--part all|loaders|roi]

Data: the 20 real ImageNet JPEGs of the foolbox==3.3.4 wheel, re-encoded (quality 90) at typical
ImageNet sizes (500 x 375, 375 x 500, 500 x 333, ...) into an ImageNet-layout folder of `--images` files.
Both loaders are the project's own (`DaliLoader`, `TorchLoader`): random-resized crop to 224 (area
0.08..1), flip, normalise, float32 NCHW batches of 64 on the CPU; one and two views per image.
Each loader runs every `--threads` value (DALI threads / DataLoader worker processes) and is
reported at its best. Runs are interleaved round by round so that load from other processes on the
machine hits every configuration alike; each figure is the median over `--epochs` timed epochs
(after one warm-up epoch). DALI builds its pipeline once (the warm-up epoch); bench/dali_build.py
times a build.
cpu ms/img counts the CPU time of the whole process tree (DataLoader workers included), a figure
that other load on the machine disturbs less than wall time.

ROI decode (`--part roi`): the 20 foolbox JPEGs as they are (ImageNet val photos, 500 x 375 to
1024 x 683), one view, batch 20, 224 px, one DALI CPU pipeline per `--threads` value and decode mode:
`fn.decoders.image_slice` of the replayed window (what the one-view train pipeline does) against
`fn.decoders.image` of the whole image and `fn.resize` of the same window (what the two-view pipeline
does per view). Both cut the same windows (views.py); interleaved rounds of `--roi-epochs` epochs each,
medians of wall and process CPU time per image.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common import interleaved, load_average, markdown_table  # noqa: E402
from pipeline.data.dali import DaliLoader  # noqa: E402
from pipeline.data.folder import list_image_folder  # noqa: E402
from pipeline.data.torch_loader import TorchLoader  # noqa: E402

SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (333, 500), (500, 500), (400, 300), (640, 480)]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_dataset(root: Path, images: int) -> Path:
    spec = importlib.util.find_spec("foolbox")  # not imported: it needs eagerpy
    sources = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg"))
    for n in range(images):
        src = sources[n % len(sources)]
        folder = root / "train" / f"class{n % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            img.convert("RGB").resize(SIZES[n % len(SIZES)], Image.BICUBIC).save(folder / f"{n:05d}.jpg", quality=90)
    return root


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process and its live descendants (from /proc)."""
    pid = pid or os.getpid()
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return total + sum(tree_cpu_seconds(c) for c in children)


def make_loader(kind: str, listing, views: int, threads: int):
    common = dict(train=True, views=views, batch_size=64, image_size=224, val_resize=256, min_area=0.08,
                  mean=MEAN, std=STD, seed=0, rank=0, world=1, device=torch.device("cpu"))
    if kind == "dali":
        return DaliLoader(listing, threads=threads, **common)
    return TorchLoader(listing, workers=threads, **common)


def timed_epoch(loader, epoch: int) -> tuple[float, float, int]:
    loader.set_epoch(epoch)
    cpu, start, images = tree_cpu_seconds(), time.perf_counter(), 0
    for batch in loader:
        images += batch["labels"].shape[0]  # images per step, whichever batch format
    wall = time.perf_counter() - start
    return images / wall, (tree_cpu_seconds() - cpu) / images * 1e3, images


def foolbox_jpegs(root: Path) -> Path:
    """The 20 real ImageNet JPEGs, unchanged, as a one-class folder."""
    spec = importlib.util.find_spec("foolbox")  # not imported: it needs eagerpy
    (root / "train" / "all").mkdir(parents=True)
    for src in sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg")):
        shutil.copy(src, root / "train" / "all" / src.name)
    return root


def roi_decode(args):
    with tempfile.TemporaryDirectory() as tmp:
        listing = list_image_folder(foolbox_jpegs(Path(tmp)) / "train")
        cases, loaders = {}, {}
        for threads in args.threads:
            for roi in (True, False):
                loader = DaliLoader(listing, train=True, views=1, batch_size=len(listing), image_size=224,
                                    val_resize=256, min_area=0.08, mean=MEAN, std=STD, threads=threads, seed=0,
                                    rank=0, world=1, device=torch.device("cpu"), roi_decode=roi)
                name = f"{'ROI decode (image_slice)' if roi else 'whole decode + ROI resize'}, {threads} threads"
                loaders[name] = loader

                def run(loader=loader):
                    for epoch in range(args.roi_epochs):
                        loader.set_epoch(epoch)
                        for _ in loader:
                            pass
                cases[name] = run
        start_load = load_average()
        results = interleaved(cases, rounds=args.rounds)
    images = len(listing) * args.roi_epochs
    rows = [[name, images / r["wall"], r["wall"] / images * 1e3, r["cpu"] / images * 1e3]
            for name, r in results.items()]
    print(f"\n{len(listing)} ImageNet JPEGs, one view, 224 px, DALI CPU; median of {args.rounds} interleaved rounds "
          f"of {args.roi_epochs} epochs; load average {start_load:.1f} -> {load_average():.1f}\n")
    print(markdown_table(["decode", "images/s", "wall ms/img", "cpu ms/img"], rows))
    for threads in args.threads:
        roi = results[f"ROI decode (image_slice), {threads} threads"]
        whole = results[f"whole decode + ROI resize, {threads} threads"]
        print(f"{threads} threads: ROI decode takes {roi['wall'] / whole['wall']:.2f}x the wall time and "
              f"{roi['cpu'] / whole['cpu']:.2f}x the CPU time of whole-image decode")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, help="reuse this folder (made if absent)")
    parser.add_argument("--part", choices=("all", "loaders", "roi"), default="all")
    parser.add_argument("--rounds", type=int, default=7, help="ROI part: interleaved rounds")
    parser.add_argument("--roi-epochs", type=int, default=10, help="ROI part: epochs of the 20 JPEGs per round")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process only collects batches
    warnings.filterwarnings("ignore", message=".*worker processes in total")  # 3 workers on 2 cores: on purpose
    # the sample tables of these temporary trees go to a temporary cache
    os.environ.setdefault("KDPIPE_CACHE_DIR", tempfile.mkdtemp(prefix="kdpipe-bench-"))
    if args.part in ("all", "roi"):
        roi_decode(args)
    if args.part == "roi":
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        if not (root / "train").is_dir():
            print(f"writing {args.images} ImageNet-sized JPEGs to {root} ...", flush=True)
            make_dataset(root, args.images)
        listing = list_image_folder(root / "train")
        configs = [(kind, views, t) for views in (1, 2) for kind in ("dali", "torch") for t in args.threads]
        loaders = {c: make_loader(c[0], listing, c[1], c[2]) for c in configs}
        for c, loader in loaders.items():  # warm-up: worker start-up, page cache
            timed_epoch(loader, 0)
        runs = {c: [] for c in configs}
        for epoch in range(1, args.epochs + 1):
            for c, loader in loaders.items():
                runs[c].append(timed_epoch(loader, epoch)[:2])

    print(f"\n{os.cpu_count()} CPU cores, {len(listing)} JPEGs, batch 64, 224 px, float32 NCHW\n")
    print(f"{'loader':12s} {'views':>5s} {'threads':>7s} {'img/s':>8s} {'cpu ms/img':>11s}")
    best = {}
    for (kind, views, threads), results in runs.items():
        rate = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        print(f"{'DALI CPU' if kind == 'dali' else 'torchvision':12s} {views:5d} {threads:7d} {rate:8.1f} {cpu:11.2f}")
        if rate > best.get((kind, views), (0, 0))[0]:
            best[kind, views] = (rate, cpu)
    print()
    for views in (1, 2):
        (d, dc), (t, tc) = best["dali", views], best["torch", views]
        print(f"{views} view{'s' if views > 1 else ' '}: DALI / torchvision = {d / t:.2f}x images/s "
              f"(best of each), {tc / dc:.2f}x less CPU per image")
    for kind in ("dali", "torch"):
        one, two = best[kind, 1][0], best[kind, 2][0]
        print(f"two views cost {one / two:.2f}x the time of one view with {'DALI' if kind == 'dali' else 'torchvision'}")


if __name__ == "__main__":
    main()
