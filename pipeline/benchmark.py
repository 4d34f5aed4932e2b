"""`launch/imagenet.py --benchmark step|loader`: what one process sustains with this config, measured
before a 90-epoch job. Both measure the configured augmentation too: the loader draws and applies
RandAugment and draws the mixing parameters; the step mixes the batch on the device (with parameters
drawn as the loader would), computes the mixed-label CE and updates the EMA.

`step` pushes a synthetic batch, made once on the training device (no loader), through the real
`Trainer.train_step` of the configured method and model pair (a random teacher when its weights are
absent: the same cost). With `--teacher.cache PATH` the step reads the teacher from the batch's records
(no teacher forward), records shaped as that cache's (views, K, temperatures, features) or, when PATH holds
no cache, as a pass with this config would write them (`teacher.cache_topk`, the features the method
needs): synthetic values, the same cost. `loader` times the configured train loader alone. Both: warm-up steps, then
steady-state steps timed with the device synchronised only at their ends; images/s counts samples (a
two-view method's sample is two images through every network). The time split comes from separate
timed passes of each part (eager modules, synchronised around each pass), so its parts need not add up
to a compiled step; `other` is the rest, shown as 0 when the parts, timed apart, add up to more than the
whole step (compilation's fusion, or timing noise on a shared CPU). FLOPs per image: torch.utils.flop_counter
over one eager step (teacher forward, student and method modules forward and backward; the matmuls and
convolutions).
`step --benchmark-batches 32,64,128,256` sweeps the per-process batch instead: images/s, step time and
peak memory at each (a fresh trainer and compile each), and the smallest batch within 90% of the best
images/s, where the device saturates. Run it on one process: it measures what one GPU sustains.
Prints a table and one line `BENCHMARK {json}`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import tempfile
import time
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.flop_counter import FlopCounterMode

from pipeline.batch import plan_batch
from pipeline.config import Config
from pipeline.data import augment_specs, build_loaders
from pipeline.data.mix_draws import mix_draws
from pipeline.errors import BadInputError
from pipeline.methods import METHODS, NetOutput, Outputs, parse_method, teacher_needs
from pipeline.models import create_network, freeze
from pipeline.teacher_cache.manifest import Manifest, RecordSpec, read_manifest
from pipeline.teacher_cache.rebuild import EXTRA_KEYS
from pipeline.teacher_cache.use import CacheUse
from pipeline.trainer import Trainer

log = logging.getLogger(__name__)

IMAGENET_TRAIN_IMAGES = 1_281_167


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the allocator's high-water mark; CPU: the process's resident-set high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(fn, steps: int, device: torch.device) -> float:
    """Seconds per call over `steps` calls after two untimed ones, synchronised at both ends only."""
    for _ in range(2):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **_) -> int:
    """Each requested gradient (input, weight) of a convolution costs its forward's FLOPs. torch's own
    formula overcounts grouped convolutions by the group count (64x on a depthwise layer of 64 channels)."""
    # weight (C_out, C_in / groups, k...) maps every output element; transposed: (C_in, C_out / groups, k...)
    forward = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


class SyntheticLoader:
    """What the trainer asks of a loader before training, for a run that never iterates one."""

    def __init__(self, num_classes: int, num_samples: int, steps: int):
        self.num_classes, self.num_samples, self.steps = num_classes, num_samples, steps

    def __len__(self):
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0):
        pass

    def sample_labels(self) -> torch.Tensor:
        """Every sample's class (CRD's negatives): the classes in turn."""
        return torch.arange(self.num_samples) % self.num_classes


class BenchmarkTrainer(Trainer):
    """The real trainer on synthetic data: no dataset listing, a random teacher when its weights are absent."""

    def create_loaders(self):
        demo = not self.cfg.data.root
        num_classes = 10 if demo else 1000  # the demo's Fashion-MNIST, else ImageNet
        num_samples = 10 * self.cfg.data.per_class if demo else IMAGENET_TRAIN_IMAGES
        loader = SyntheticLoader(num_classes, num_samples, 10**6)
        self.steps_per_epoch = len(loader)
        return loader, loader

    def create_teacher(self):
        c = self.cfg.teacher
        if c.pretrained or (c.checkpoint and Path(c.checkpoint).is_file()):
            try:
                return super().create_teacher()
            except BadInputError as e:  # e.g. the demo's teacher file under --teacher.arch resnet34
                log.warning("benchmark: %s", e)
        log.warning("benchmark: no teacher weights for %s (%s): a randomly initialised one (the same cost)",
                    c.arch, c.checkpoint or "none set")
        random = type(c)(arch=c.arch)
        return self.place_teacher(freeze(self.create_network(random)))

    def create_teacher_cache(self) -> CacheUse:
        """The record layout of the cache at teacher.cache, or of the one a pass would write for this run."""
        root = Path(self.cfg.teacher.cache)
        manifest = read_manifest(root) if root.is_dir() else None
        needs = teacher_needs(self.cfg.method, self.cfg)
        if manifest is None:
            dim = 0
            if needs.features:  # the teacher's feature width: a network built for its size only
                dim = create_network(type(self.cfg.teacher)(arch=self.cfg.teacher.arch), 10, self.cfg.data.mean,
                                     self.cfg.data.std).feature_dim
            views = max(METHODS[n].views for n in parse_method(self.cfg.method))
            record = RecordSpec.create(views, self.cfg.teacher.cache_topk, self.train_loader.num_classes,
                                       needs.temperatures.values(), dim)
            manifest = Manifest(made_from={}, record=record, epochs=1, samples=self.train_loader.num_samples,
                                world=1, batch_size=1)
            log.warning("benchmark: no teacher cache at %s: synthetic records of its layout (top %d of %d classes, "
                        "features %d; the same cost)", root, record.topk, record.num_classes, dim)
        return CacheUse(root, manifest, sorted({float(t) for t in needs.temperatures.values()}))

    def synthetic_batch(self) -> dict:
        b, size, device = self.batch_plan.per_process, self.cfg.data.image_size, self.accelerator.device
        generator = torch.Generator(device="cpu").manual_seed(0)
        images = torch.randn(self.views * b, 3, size, size, generator=generator).to(device)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        index = torch.randint(self.train_loader.num_samples, (b,), generator=generator)
        batch = {"images": images,
                 "labels": torch.randint(self.train_loader.num_classes, (b,), generator=generator).to(device),
                 "index": index.to(device)}
        mix, _ = augment_specs(self.cfg.augment)
        if mix.active:  # the parameters the loader would carry: the step mixes on the device as in training
            lam, box = mix_draws(0, 0, index.numpy(), mix, height=size, width=size)
            batch["mix_lam"] = torch.from_numpy(lam).repeat(self.views).to(device)
            batch["mix_box"] = torch.from_numpy(box).repeat(self.views, 1).to(device)
        if self.cache is not None:
            batch.update({k: v.to(device) for k, v in self.synthetic_records(self.views * b, generator).items()})
        return batch

    def synthetic_records(self, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A batch's cache fields as a loader delivers them ((views * B, ...)), for the cache's layout."""
        record = self.cache.manifest.record
        k, c = record.topk, record.num_classes
        values = -(torch.rand(rows, k, generator=generator) * 10).sort(dim=1).values
        fields = {"values": (values - values[:, :1]).half(),
                  "classes": torch.rand(rows, c, generator=generator).argsort(dim=1)[:, :k].to(
                      torch.int16 if record.dtype["classes"].base.itemsize == 2 else torch.int32)}
        if record.temperatures and not record.exact:
            fields["tail"] = torch.randn(rows, len(record.temperatures), generator=generator) - 5
        if record.feature_dim:
            fields["features"] = torch.randn(rows, record.feature_dim, generator=generator).half()
        return {EXTRA_KEYS[name]: value for name, value in fields.items()}

    def step_flops(self, batch: dict) -> int:
        """Matmul and convolution FLOPs of one eager step: teacher forward, student (+ method modules)
        forward and backward. The optimizer's elementwise work is not counted."""
        images, labels = batch["images"], batch["labels"].repeat(self.views)
        fixed = {torch.ops.aten.convolution_backward: conv_backward_flops}
        with FlopCounterMode(display=False, custom_mapping=fixed) as counter:
            teacher_out = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_out = NetOutput(*self.teacher(images))
            elif self.cache is not None:  # no teacher forward: its outputs come with the batch
                teacher_out = self.teacher_outputs(batch, images)
            terms = self.model(images, labels, teacher_out, self.views, batch.get("index"))
            sum(terms.values()).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def time_split(self, batch: dict, steps: int) -> dict[str, float]:
        """Milliseconds per step of each part on its own (eager modules, separately timed passes)."""
        device, autocast = self.accelerator.device, self.accelerator.autocast
        images, labels = batch["images"], batch["labels"].repeat(self.views)
        distiller = self.accelerator.unwrap_model(self.model)
        split = {}
        teacher_out = None
        if self.teacher_fn is not None:
            def teacher():
                with autocast():
                    return self.teacher_forward(images)
            split["teacher_forward"] = timed(teacher, steps, device)
            teacher_out = teacher()
        elif self.cache is not None:
            def cached():
                with autocast():
                    return self.teacher_outputs(batch, images)
            split["teacher_from_cache"] = timed(cached, steps, device)
            teacher_out = cached()

        def student():
            with autocast():
                logits, features = distiller.student(images)
                loss = logits.float().sum() + features.float().sum()
            loss.backward()
        split["student_forward_backward"] = timed(student, steps, device)
        with torch.no_grad(), autocast():
            logits, features = distiller.student(images)

        def losses():  # the method modules and loss terms, forward and backward, on fixed student outputs
            s = NetOutput(logits.detach().requires_grad_(), features.detach().requires_grad_())
            out = Outputs(images=images, labels=labels, student=s, teacher=teacher_out, views=self.views,
                          index=batch.get("index"))
            with autocast():
                terms = [torch.nn.functional.cross_entropy(s.logits.float(), labels) * distiller.ce_weight]
                for method in distiller.methods:
                    terms += list(method(out).values())
            sum(terms).backward()
        split["loss_terms"] = timed(losses, steps, device)

        def optimizer():  # the non-finite check, the update and the buffers' restore, as train_step has them
            skipped = self.nonfinite.check({"loss": logits.detach().float().mean()}, 0)
            self.optimizer.optimizer.found_inf = skipped.float()
            self.optimizer.step()
            self.restore_if_skipped(skipped)
        self.nonfinite.forget()
        self.buffers.take()
        split["optimizer"] = timed(optimizer, steps, device)
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite.forget()
        return {k: 1e3 * v for k, v in split.items()}


def time_steps(cfg: Config, args: argparse.Namespace) -> tuple[BenchmarkTrainer, dict, float, float]:
    """A BenchmarkTrainer, its synthetic batch, and seconds per `Trainer.train_step` and peak memory (MB)
    over the timed steps after the warm-up ones."""
    trainer = BenchmarkTrainer(cfg)
    device = trainer.accelerator.device
    batch = trainer.synthetic_batch()
    for _ in range(args.benchmark_warmup):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed(lambda: trainer.train_step(batch), args.benchmark_steps, device)
    return trainer, batch, step_s, peak_memory_mb(device)


def benchmark_step(cfg: Config, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.output_dir, cfg.train.name = tmp, "benchmark"
        trainer, batch, step_s, memory = time_steps(cfg, args)
        flops = trainer.step_flops(batch)
        split = trainer.time_split(batch, max(3, args.benchmark_steps // 3))
        if trainer.writer is not None:
            trainer.writer.close()
    split["other"] = max(0.0, 1e3 * step_s - sum(split.values()))
    b = trainer.batch_plan.per_process
    return {"images_per_s": b / step_s, "step_ms": 1e3 * step_s, "flops_per_image": flops / b,
            "time_split_ms": split, "peak_memory_mb": memory, "batch_size": b, "views": trainer.views,
            "device": str(trainer.accelerator.device), "precision": trainer.accelerator.mixed_precision,
            "compiled": trainer.step_fn is not trainer.model}


SATURATED = 0.9  # a batch whose images/s reaches this share of the best measured one fills the device


def benchmark_sweep(cfg: Config, args: argparse.Namespace) -> dict:
    """`--benchmark-batches`: the step's images/s at each per-process batch (a fresh trainer and compile
    per batch, as a run at that batch would have), stopping at the first that does not fit in memory."""
    rows, about = [], {}
    for b in args.benchmark_batches:
        run = cfg.model_copy(deep=True)
        run.train.batch_size, run.train.global_batch_size = b, 0
        with tempfile.TemporaryDirectory() as tmp:
            run.train.output_dir, run.train.name = tmp, "benchmark"
            try:
                trainer, _, step_s, memory = time_steps(run, args)
            except torch.cuda.OutOfMemoryError:
                rows.append({"batch_size": b, "error": "out of memory"})
                break
            finally:
                torch._dynamo.reset()  # each batch compiles its own static-shape graph
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            if trainer.writer is not None:
                trainer.writer.close()
        about = {"views": trainer.views, "device": str(trainer.accelerator.device),
                 "precision": trainer.accelerator.mixed_precision, "compiled": trainer.step_fn is not trainer.model}
        ran = trainer.batch_plan.per_process
        rows.append({"batch_size": ran, "images_per_s": ran / step_s, "step_ms": 1e3 * step_s,
                     "peak_memory_mb": memory})
        del trainer
    return {"sweep": rows, "saturates_at": saturated_batch(rows), **about}


def saturated_batch(rows: list[dict]) -> int | None:
    """The smallest batch whose images/s reaches SATURATED x the best measured (None: none measured)."""
    best = max((r["images_per_s"] for r in rows if "images_per_s" in r), default=0.0)
    return next((r["batch_size"] for r in rows if r.get("images_per_s", 0.0) >= SATURATED * best > 0), None)


def benchmark_loader(cfg: Config, args: argparse.Namespace) -> dict:
    from pipeline.methods import METHODS, parse_method

    views = max(METHODS[n].views for n in parse_method(cfg.method))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = plan_batch(cfg.train, processes=1).per_process  # one process, as the step benchmark
    train, _ = build_loaders(cfg.data, batch_size=batch, views=views, seed=cfg.train.seed,
                             rank=0, world=1, device=device, augment=cfg.augment)
    total = args.benchmark_warmup + args.benchmark_steps
    if len(train) < total:
        raise ValueError(f"--benchmark loader: the train loader has {len(train)} batches of {batch}, "
                         f"fewer than {total} (--benchmark-warmup + --benchmark-steps): lower them")
    train.set_epoch(0)
    batches, waits = iter(train), []
    for step in range(total):
        if step == args.benchmark_warmup:
            synchronize(device)
            start = time.perf_counter()
        wait = time.perf_counter()
        next(batches)
        synchronize(device)
        waits.append(time.perf_counter() - wait)
    elapsed = time.perf_counter() - start
    del batches
    return {"images_per_s": batch * args.benchmark_steps / elapsed,
            "step_ms": 1e3 * elapsed / args.benchmark_steps, "flops_per_image": None,
            "time_split_ms": {"data_wait": 1e3 * sum(waits[args.benchmark_warmup:]) / args.benchmark_steps},
            "peak_memory_mb": peak_memory_mb(device), "batch_size": batch, "views": views,
            "device": str(device), "backend": cfg.data.backend}


def run_benchmark(cfg: Config, args: argparse.Namespace) -> dict:
    print_fn = print if PartialState().is_main_process else (lambda *a: None)
    head = {"mode": args.benchmark, "method": cfg.method, "teacher": cfg.teacher.arch, "student": cfg.student.arch,
            "image_size": cfg.data.image_size}
    if args.benchmark == "step" and getattr(args, "benchmark_batches", None):
        result = {**head, **benchmark_sweep(cfg, args)}
        print_fn(f"benchmark step, per-process batch sweep: {cfg.method}, {cfg.teacher.arch} -> {cfg.student.arch}, "
                 f"{cfg.data.image_size} px on {result.get('device', '?')}")
        print_fn("| batch per process | images/s | step ms | peak memory MB |")
        for r in result["sweep"]:
            print_fn(f"| {r['batch_size']:>17} | " + (f"{r['images_per_s']:>8.1f} | {r['step_ms']:>7.2f} | "
                                                       f"{r['peak_memory_mb']:>14.0f} |" if "error" not in r
                                                       else f"{r['error']} |"))
        if result["saturates_at"] is not None:
            print_fn(f"batch {result['saturates_at']} per process reaches {SATURATED:.0%} of the best images/s "
                     "measured: a larger one buys little speed (it may still be wanted for the recipe)")
        print_fn("BENCHMARK " + json.dumps(result))
        return result
    result = (benchmark_step if args.benchmark == "step" else benchmark_loader)(cfg, args)
    flops = result["flops_per_image"]
    tflops = flops * result["images_per_s"] / 1e12 if flops else None
    result = {**head, **result, "tflops": tflops, "peak_tflops": args.peak_tflops or None,
              "peak_fraction": tflops / args.peak_tflops if tflops and args.peak_tflops else None}
    rows = [("images/s", f"{result['images_per_s']:.1f}"), ("step ms", f"{result['step_ms']:.2f}")]
    rows += [(f"  {k} ms", f"{v:.2f}") for k, v in result["time_split_ms"].items()]
    if flops:
        rows += [("GFLOP/image", f"{flops / 1e9:.3f}"), ("TFLOP/s", f"{tflops:.3f}")]
    if result["peak_fraction"] is not None:
        rows.append(("of peak", f"{100 * result['peak_fraction']:.1f}%"))
    rows.append(("peak memory MB", f"{result['peak_memory_mb']:.0f}"))
    print_fn(f"benchmark {args.benchmark}: {cfg.method}, {cfg.teacher.arch} -> {cfg.student.arch}, "
             f"{result['image_size']} px, batch {result['batch_size']} per process on {result['device']}")
    print_fn("\n".join(f"| {k:<30} | {v:>12} |" for k, v in rows))
    print_fn("BENCHMARK " + json.dumps(result))
    return result
