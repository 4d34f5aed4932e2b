"""Run the frozen teacher once over E epochs of the replayed train views and store its outputs.

    accelerate launch launch/cache_teacher.py --config configs/demo.yaml --teacher.cache runs/cache/demo \
        [--epochs 30] [--views 2] [--temperatures 4] [--batch-size 512] [--teacher.cache_topk 2] \
        [--teacher.cache_features true]

Every rank writes its own shard per epoch (pipeline/teacher_cache/storage.py); rank 0 writes the manifest,
with the teacher's val top-1/top-5 measured once here. Rerun the same command after a kill: finished shards
are skipped and a half-written one continues. Runs then train from it with `--teacher.cache PATH`.
Defaults: the config's train.epochs, the views of its --method, every temperature a method of the config
would use (kd, dkd, slkd), an inference batch of 256 images per process and view. Every config key is a
flag as in launch/imagenet.py.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import InitProcessGroupKwargs  # noqa: E402

from pipeline.config import Config, parse_args  # noqa: E402
from pipeline.device import use_cpu  # noqa: E402
from pipeline.errors import BadInputError, UserError  # noqa: E402
from pipeline.methods import METHODS, parse_method  # noqa: E402
from pipeline.metrics import count_hits  # noqa: E402
from pipeline.models import create_network, fold_batchnorm, freeze  # noqa: E402
from pipeline.teacher_cache.identity import made_from, notes  # noqa: E402
from pipeline.teacher_cache.encode import encode_records  # noqa: E402
from pipeline.mixing import mix_images  # noqa: E402
from pipeline.teacher_cache.loader_hooks import cache_pass_loaders, train_listing  # noqa: E402
from pipeline.teacher_cache.manifest import Manifest, RecordSpec, write_manifest  # noqa: E402
from pipeline.teacher_cache.storage import ShardWriter, begin, finish, open_shard  # noqa: E402
from pipeline.teacher_cache.use import DECODER  # noqa: E402
from pipeline.trainer import process_group_kwargs  # noqa: E402

log = logging.getLogger("cache_teacher")


def own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, description="the cache pass (launch/cache_teacher.py)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs of views to cache (0 = train.epochs)")
    parser.add_argument("--views", type=int, default=0, help="views per sample (0 = what --method needs)")
    parser.add_argument("--temperatures", default="",
                        help="comma-separated temperatures to keep the tail mass at ('' = those of kd, dkd and slkd)")
    parser.add_argument("--batch-size", type=int, default=256, help="inference batch per process, per view")
    parser.add_argument("--sync-every-s", type=float, default=30.0,
                        help="make written records durable this often (a killed pass redoes at most this much)")
    return parser


def parse(argv=None) -> tuple[Config, argparse.Namespace]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(own_parser().format_help())
    opts, rest = own_parser().parse_known_args(argv)
    cfg, _ = parse_args(rest)
    if not cfg.teacher.cache:
        raise BadInputError("teacher.cache is empty: give the folder to write the cache to (--teacher.cache PATH)")
    for flag, value, least in (("--epochs", opts.epochs, 0), ("--views", opts.views, 0),
                               ("--batch-size", opts.batch_size, 1), ("--sync-every-s", opts.sync_every_s, 0)):
        if value < least:
            raise BadInputError(f"{flag} must be >= {least}, got {value}")
    opts.epochs = opts.epochs or cfg.train.epochs
    opts.views = opts.views or max(METHODS[n].views for n in parse_method(cfg.method))
    try:
        opts.temperatures = ([float(t) for t in opts.temperatures.split(",")] if opts.temperatures
                             else [t for n in METHODS for t in METHODS[n].teacher_needs(cfg).temperatures.values()])
    except ValueError:
        raise BadInputError(f"--temperatures must be comma-separated numbers, got {opts.temperatures!r}") from None
    if any(t <= 0 for t in opts.temperatures):
        raise BadInputError(f"--temperatures must be > 0, got {opts.temperatures}")
    return cfg, opts


def build_teacher(cfg: Config, num_classes: int, device: torch.device):
    """(the frozen teacher as built, the function the pass runs: BatchNorm folded, compiled where the
    trainer would compile it), as the trainer builds them."""
    if not (cfg.teacher.checkpoint or cfg.teacher.pretrained):
        raise BadInputError("the cache pass needs a teacher: set teacher.checkpoint or teacher.pretrained")
    teacher = freeze(create_network(cfg.teacher, num_classes, cfg.data.mean, cfg.data.std)).to(device)
    if device.type == "cuda":
        teacher = teacher.to(memory_format=torch.channels_last)
    run = fold_batchnorm(teacher)
    if cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda"):
        backend = cfg.train.compile_backend
        run = torch.compile(run, backend=backend, options={"freezing": True} if backend == "inductor" else None)
    return teacher, run


def write_epoch(shard: ShardWriter, batches, teacher_fn, spec: RecordSpec, autocast) -> dict:
    """Run the teacher over one epoch's batches (this rank's samples, from shard.start_step) and finish the shard."""
    try:
        for batch in batches:
            images = batch["images"]
            if "mix_lam" in batch:  # the images the student will see: mixed as the trainer mixes them
                images = mix_images(images, batch["mix_lam"], batch["mix_box"])
            if images.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), autocast():
                logits, features = teacher_fn(images)
            records = encode_records(logits, features if spec.feature_dim else None, spec.views, spec.topk,
                                     spec.temperatures)
            valid = batch.get("valid", torch.ones_like(batch["index"], dtype=torch.bool))
            shard.write(batch["index"].cpu().numpy(), valid.cpu().numpy(), records)
        return shard.finish()
    finally:
        shard.close()


@torch.no_grad()
def evaluate(teacher_fn, val_loader, accelerator) -> dict:
    """The teacher's val top-1/top-5, every image counted once across processes."""
    counts = torch.zeros(4, dtype=torch.int64, device=accelerator.device)
    seen = torch.zeros((), dtype=torch.int64, device=accelerator.device)
    val_loader.set_epoch(0)
    for batch in val_loader:
        with accelerator.autocast():
            logits, _ = teacher_fn(batch["images"])
        counts += count_hits(logits, batch["labels"], batch["valid"])
        seen += batch["valid"].sum()
    counts, seen = accelerator.reduce(counts, "sum"), int(accelerator.reduce(seen, "sum").item())
    return {"top1": 100 * counts[0].item() / seen, "top5": 100 * counts[1].item() / seen, "images": seen}


def run(cfg: Config, opts: argparse.Namespace):
    cuda = not use_cpu(cfg)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and cuda)
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no",
                              kwargs_handlers=[InitProcessGroupKwargs(**process_group_kwargs(cfg))])
    rank, world = accelerator.process_index, accelerator.num_processes
    with accelerator.main_process_first():  # the demo data is written once, by rank 0
        train, val = cache_pass_loaders(cfg, batch_size=opts.batch_size, views=opts.views, rank=rank, world=world,
                                        device=accelerator.device)
    names, labels, num_classes = train_listing(train)
    teacher, teacher_fn = build_teacher(cfg, num_classes, accelerator.device)
    spec = RecordSpec.create(opts.views, cfg.teacher.cache_topk, num_classes, opts.temperatures,
                             teacher.feature_dim if cfg.teacher.cache_features else 0)
    intended = Manifest(made_from=made_from(cfg, teacher, names, labels, num_classes), record=spec,
                        epochs=opts.epochs, samples=len(names), world=world, batch_size=opts.batch_size,
                        notes={**notes(cfg), "precision": "bf16" if bf16 else "fp32", DECODER: train.decoder,
                               "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    root = Path(cfg.teacher.cache)
    manifest = begin(root, intended)  # every rank checks; the same error everywhere
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(root, manifest)
    accelerator.wait_for_everyone()
    log.info("teacher cache %s: %d epochs x %d samples x %d view(s), top %d of %d classes, temperatures %s, "
             "features %d, %d bytes per record", root, manifest.epochs, manifest.samples, spec.views, spec.topk,
             num_classes, spec.temperatures or "all (exact)", spec.feature_dim, spec.dtype.itemsize)
    for epoch in range(manifest.epochs):
        shard = open_shard(root, manifest, epoch, rank, opts.sync_every_s)
        if shard is None:
            continue
        train.set_epoch(epoch, start_step=shard.start_step)
        start = time.time()
        write_epoch(shard, train, teacher_fn, spec, accelerator.autocast)
        log.info("epoch %d: shard %s written in %.1f s", epoch + 1, shard.name, time.time() - start)
    teacher_val = manifest.teacher_val or evaluate(teacher_fn, val, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish(root, manifest, teacher_val)
        accelerator.print(f"teacher cache {root} complete: teacher val top-1 {teacher_val['top1']:.2f}, "
                          f"top-5 {teacher_val['top5']:.2f}")
    accelerator.wait_for_everyone()


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        run(*parse(argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
