"""Write webdataset shards + DALI index files from an ImageNet-layout folder:
`python -m pipeline.data.dali SRC_ROOT DST_ROOT [--per-shard 1000] [--seed 0]` (layout: webdataset.py)."""
import argparse

from pipeline.data.dali.webdataset import write_webdataset

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("src", help="ImageNet-layout root with train/ and val/ class folders")
parser.add_argument("dst", help="output root: train/ and val/ shard folders are created in it")
parser.add_argument("--per-shard", type=int, default=1000, help="samples per tar")
parser.add_argument("--seed", type=int, default=0, help="seed of the train samples' shuffled order")
args = parser.parse_args()
write_webdataset(args.src, args.dst, args.per_shard, args.seed)
