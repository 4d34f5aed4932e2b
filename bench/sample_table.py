"""What the sample table costs (pipeline/data/sample_table.py) on the demo's train tree (60,000 JPEGs):
the first run (stat every file for the key, read every header) and every later run (stat for the key,
load the cached table), each in a fresh cache directory, rounds interleaved, medians.

    .venv/bin/python bench/sample_table.py [--rounds 3] [--threads 8]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from common import interleaved, load_average, markdown_table  # noqa: I001  (puts the repo on sys.path)
from pipeline.config import DataConfig
from pipeline.data import sample_table as st
from pipeline.data.demo import prepare_demo_data
from pipeline.data.folder import list_image_folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=st.THREADS)
    args = parser.parse_args()
    listing = list_image_folder(prepare_demo_data(DataConfig().demo_dir) / "train")
    cache = tempfile.mkdtemp(prefix="kdpipe-bench-")
    os.environ["KDPIPE_CACHE_DIR"] = cache

    def first():
        shutil.rmtree(cache, ignore_errors=True)
        st.sample_table(listing, args.threads)

    def cached():
        st.sample_table(listing, args.threads)

    start = load_average()
    results = interleaved({"first run (key + headers)": first, "later run (key + cached table)": cached,
                           "the key alone (stat every file)": lambda: st.listing_key(listing, args.threads)},
                          rounds=args.rounds)
    shutil.rmtree(cache, ignore_errors=True)
    n = len(listing)
    rows = [[name, r["wall"], r["wall"] / n * 1e6, r["cpu"] / n * 1e6] for name, r in results.items()]
    print(markdown_table(["pass", "wall s", "wall us/image", "cpu us/image"], rows))
    per_image = {name: r["wall"] / n for name, r in results.items()}
    print(f"\n{n} JPEGs, {args.threads} threads, load average {start:.1f} -> {load_average():.1f}; "
          f"at these rates ImageNet's 1,281,167 train images: first run "
          f"{per_image['first run (key + headers)'] * 1281167:.0f} s, later runs "
          f"{per_image['later run (key + cached table)'] * 1281167:.0f} s")


if __name__ == "__main__":
    main()
