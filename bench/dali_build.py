"""What building a DALI pipeline costs: the cost no loader pays per epoch or per evaluation (every
format's pipelines are built once per run), only once at start-up.

    .venv/bin/python bench/dali_build.py [--rounds 5] [--threads 4]

Builds (and frees) the project's own train (1 and 2 views) and val pipelines on the demo data, interleaved
rounds, medians; on a CUDA machine the `mixed` (nvJPEG) pipelines too, whose build allocates the decoder's
preallocated buffers (the main cost there), and whose teardown frees pinned host memory.
"""
from __future__ import annotations

import argparse
import gc

import torch

from common import interleaved, load_average, markdown_table  # noqa: I001  (puts the repo on sys.path)
from pipeline.config import DataConfig
from pipeline.data.dali import DaliLoader, build_dali_loaders
from pipeline.data.demo import prepare_demo_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    root = prepare_demo_data(DataConfig().demo_dir)
    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if torch.cuda.is_available() else [])
    cases = {}
    for device in devices:
        for views in (1, 2):
            train, val = build_dali_loaders(DataConfig(backend="dali"), root, views=views, batch_size=64,
                                            image_size=224, val_resize=256, min_area=0.08, mean=[0.5] * 3,
                                            std=[0.25] * 3, workers=args.threads, seed=0, rank=0, world=1,
                                            device=device)
            for loader in (train, val) if views == 1 else (train,):
                name = f"{'mixed' if device.type == 'cuda' else 'cpu'} {'train' if loader.train else 'val'}"
                cases[f"{name}, {loader.views} view{'s' if loader.views > 1 else ''}"] = build_and_free(loader)
    results = interleaved(cases, rounds=args.rounds)
    rows = [[name, r["wall"] * 1e3, r["cpu"] * 1e3] for name, r in results.items()]
    print(markdown_table(["pipeline", "build + free, ms (median wall)", "CPU ms"], rows))
    print(f"\nload average {load_average():.1f}; --threads {args.threads}; rounds {args.rounds}")


def build_and_free(loader: DaliLoader):
    def run():
        pipe = loader._build()
        del pipe
        gc.collect()
    return run


if __name__ == "__main__":
    main()
