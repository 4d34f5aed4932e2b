"""The accelerate training loop: distil a frozen teacher into a student with any `+`-joined methods.

Read top to bottom: `Trainer.__init__` is the table of contents (accelerator, batch, loaders, networks,
methods, optimizer, schedule, checkpoints, resume); `fit` runs epochs; `train_epoch` runs steps;
`train_step` is one step; `evaluate` is exact top-1/top-5 over the validation set with every image
counted once across processes. What is not the loop has its own module: the batch and lr
(pipeline/batch.py), non-finite steps (pipeline/nonfinite.py), checkpoints and resume
(pipeline/run_checkpoints.py), stop signals (pipeline/stopping.py).

The steady-state step never waits on the host (../shared/design.md, "The hot path"): a non-finite
loss or gradient is detected, the update skipped and every buffer put back on the device, and the record
of it, the loss values and the stop-signal agreement are read only at logging, checkpoint and epoch-end steps.
"""
from __future__ import annotations

import json
import logging
import math
import time
from datetime import timedelta
from pathlib import Path

import timm.utils
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, set_seed
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from pipeline import checkpoint
from pipeline.batch import BatchPlan, describe, plan_batch, small_batch_warning
from pipeline.config import Config, to_yaml
from pipeline.data import build_loaders
from pipeline.device import use_cpu
from pipeline.distiller import Distiller
from pipeline.ema import StudentEma
from pipeline.errors import BadInputError
from pipeline.metrics import count_hits, real_label_table
from pipeline.methods import METHODS, MethodContext, NetOutput, build_methods, parse_method
from pipeline.mixing import mix_images
from pipeline.models import Network, create_network, export_network, fold_batchnorm, freeze
from pipeline.nonfinite import BufferSnapshot, NonFiniteSteps
from pipeline.optim import create_optimizer, create_scheduler
from pipeline.run_checkpoints import PROGRESS, RunCheckpoints
from pipeline.stopping import StopSignals
from pipeline.teacher_cache.use import CacheUse, cached_teacher, open_for_run

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


def process_group_kwargs(cfg: Config) -> dict:
    """init_process_group arguments: a collective waiting longer than train.dist_timeout_s (a dead or hung
    rank) raises instead of hanging, so the launcher exits and Slurm can requeue."""
    return {"timeout": timedelta(seconds=cfg.train.dist_timeout_s)}


class Trainer:
    def __init__(self, cfg: Config, resume: str = ""):
        self.cfg = cfg
        names = parse_method(cfg.method)
        self.views = max(METHODS[n].views for n in names)
        self.needs_teacher = any(METHODS[n].needs_teacher for n in names)
        self.stop = StopSignals()
        self.stop.install()  # early: a signal during setup must not kill a rank mid-resume
        self.accelerator = self.create_accelerator()
        set_seed(cfg.train.seed)  # same initial weights on every process (DDP also broadcasts them)
        self.run_dir = self.create_run_dir()
        self.batch_plan = self.create_batch_plan()
        self.train_loader, self.val_loader = self.create_loaders()
        self.real_labels = self.create_real_labels()
        self.teacher_fn = None  # the teacher as the step runs it (BatchNorm folded, compiled)
        # --teacher.cache: the teacher's outputs come with the batches; the teacher is not built
        self.cache = self.create_teacher_cache() if self.needs_teacher and cfg.teacher.cache else None
        self.teacher = self.create_teacher() if self.needs_teacher and self.cache is None else None
        self.model = self.create_distiller()
        self.optimizer = create_optimizer(self.model, cfg.train, self.batch_plan.lr)
        self.scheduler = create_scheduler(self.optimizer, cfg.train, self.steps_per_epoch)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.distiller: Distiller = self.accelerator.unwrap_model(self.model)
        self.ema = self.create_ema()
        self.step_fn = self.create_compiled_step()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.nonfinite = NonFiniteSteps(self.params, cfg.train.skip_nonfinite)
        self.buffers = self.create_buffer_snapshot()
        self.epoch, self.step_in_epoch, self.global_step, self.skipped_steps = 0, 0, 0, 0
        self.history: list[dict] = []
        self.checkpoints = self.create_checkpoints()
        if resume:
            self.restore_progress(self.checkpoints.resume(resume))
        self.writer = SummaryWriter(str(self.run_dir / "tb")) if self.accelerator.is_main_process else None

    # ---- construction -------------------------------------------------------------------------
    def create_accelerator(self) -> Accelerator:
        cuda = not use_cpu(self.cfg)  # raises if the run needs CUDA and has none (pipeline/device.py)
        precision = self.cfg.train.precision
        bf16 = precision == "bf16" or (precision == "auto" and cuda)
        # broadcast_buffers=False: memory banks are buffers too and must not be re-broadcast every step;
        # BN statistics are averaged across processes before each evaluation and checkpoint instead.
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
        pg = InitProcessGroupKwargs(**process_group_kwargs(self.cfg))
        accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no", kwargs_handlers=[ddp, pg])
        # TF32 for float32 matmuls and convolutions (CUDA only; the flags are inert elsewhere). Set after the
        # Accelerator, which turns matmul TF32 on under a dynamo plugin; through the legacy flags, which
        # accelerate and inductor read (setting the fp32_precision API as well makes their getters raise).
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.cfg.train.tf32
        return accelerator

    def create_run_dir(self) -> Path:
        t = self.cfg.train
        name = t.name or f"{self.cfg.method.replace('+', '_')}-{self.cfg.teacher.arch}-{self.cfg.student.arch}"
        run_dir = Path(t.output_dir) / name
        if self.accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(to_yaml(self.cfg))
        return run_dir

    def create_batch_plan(self) -> BatchPlan:
        plan = plan_batch(self.cfg.train, self.accelerator.num_processes)
        if self.accelerator.is_main_process:
            log.info(describe(plan, self.cfg.train))
            warning = small_batch_warning(plan, self.accelerator.device.type)
            if warning:
                log.warning(warning)
        return plan

    def create_loaders(self):
        with self.accelerator.main_process_first():  # the demo data is written once, by rank 0
            train, val = build_loaders(
                self.cfg.data, batch_size=self.batch_plan.per_process, views=self.views, seed=self.cfg.train.seed,
                rank=self.accelerator.process_index, world=self.accelerator.num_processes,
                device=self.accelerator.device, augment=self.cfg.augment)
        self.steps_per_epoch = len(train)
        if self.cfg.train.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, self.cfg.train.steps_per_epoch)
            train.limit_steps(self.steps_per_epoch)  # the loader prepares no batch the epoch will not use
        return train, val

    def create_real_labels(self) -> torch.Tensor | None:
        """ImageNet-ReaL label sets of the val samples (data.real_labels), on the device; None when off."""
        if not self.cfg.data.real_labels:
            return None
        source = getattr(self.val_loader, "listing", None) or self.val_loader.source  # torchvision | DALI loader
        table = real_label_table(self.cfg.data.real_labels, source.files, self.val_loader.num_classes)
        return table.to(self.accelerator.device)

    def create_network(self, model_cfg) -> Network:
        return create_network(model_cfg, self.train_loader.num_classes, self.cfg.data.mean, self.cfg.data.std)

    def create_teacher_cache(self) -> CacheUse:
        """The cache checked against this run (one-line errors) and attached to the train loader."""
        return open_for_run(self.cfg, self.train_loader, self.views)

    def create_teacher(self) -> Network:
        if not (self.cfg.teacher.checkpoint or self.cfg.teacher.pretrained):
            raise BadInputError("the method needs a teacher: set teacher.checkpoint (a local .safetensors or state "
                             "dict) or teacher.pretrained, or set teacher.train_if_missing to train one first")
        # The teacher's random init (its weights are loaded over it) leaves the global RNG alone, so the
        # student starts alike with a live teacher, a teacher cache (no teacher built) or none at all.
        with torch.random.fork_rng(devices=[]):
            teacher = freeze(self.create_network(self.cfg.teacher))
        return self.place_teacher(teacher)

    def place_teacher(self, teacher: Network) -> Network:
        """On the device, channels_last on CUDA; the step runs `teacher_fn`, a copy with BatchNorm folded
        into the convolutions (compiled with its weights frozen in `create_compiled_step`)."""
        teacher = teacher.to(self.accelerator.device)
        if self.accelerator.device.type == "cuda":
            teacher = teacher.to(memory_format=torch.channels_last)
        self.teacher_fn = fold_batchnorm(teacher)
        return teacher

    def create_distiller(self) -> Distiller:
        student = self.create_network(self.cfg.student)
        teacher_dim = self.teacher.feature_dim if self.teacher is not None else 0
        if self.cache is not None:
            teacher_dim = self.cache.manifest.record.feature_dim
        ctx = MethodContext(cfg=self.cfg, student_dim=student.feature_dim, teacher_dim=teacher_dim,
                            num_classes=self.train_loader.num_classes,
                            num_train_samples=self.train_loader.num_samples,
                            sample_labels=getattr(self.train_loader, "sample_labels", None),
                            build_teacher_like=lambda: self.create_network(
                                type(self.cfg.teacher)(arch=self.cfg.teacher.arch)))
        model = Distiller(student, build_methods(self.cfg.method, ctx), self.cfg.train.ce_weight,
                          self.cfg.train.label_smoothing)
        model = model.to(self.accelerator.device)
        if self.accelerator.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def create_ema(self) -> StudentEma | None:
        """The student's moving average (ema.decay > 0), saved in every checkpoint (pipeline/ema.py)."""
        if not self.cfg.ema.decay:
            return None
        ema = StudentEma(self.distiller.student, self.cfg.ema.decay, self.cfg.ema.warmup)
        self.accelerator.register_for_checkpointing(ema)
        return ema

    def create_compiled_step(self):
        """The student step compiled on its own; the teacher on its own too, with its (folded, frozen)
        weights as graph constants (inductor's freezing)."""
        backend = self.cfg.train.compile_backend
        if self.accelerator.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: pick the fastest conv kernels once
        mode = self.cfg.train.compile
        if mode == "on" or (mode == "auto" and torch.cuda.is_available()):
            log.info("torch.compile (%s) of the student step and the teacher", backend)
            if self.teacher is not None:
                options = {"freezing": True} if backend == "inductor" else None
                self.teacher_fn = torch.compile(self.teacher_fn, backend=backend, options=options)
            return torch.compile(self.model, backend=backend)
        return self.model

    def create_buffer_snapshot(self) -> BufferSnapshot:
        """Every buffer of the trained module, for a skipped step to put back; the methods' large ones
        (CRD's memory banks) are restored by their methods."""
        large = {f"methods.{i}.{n}" for i, m in enumerate(self.distiller.methods) for n in m.large_buffers}
        return BufferSnapshot(self.distiller, exclude=large)

    def create_checkpoints(self) -> RunCheckpoints:
        return RunCheckpoints(self.accelerator, self.run_dir, self.cfg.method, self.cfg.train.keep_checkpoints,
                              self.optimizer, self.train_loader, before_save=self.sync_batchnorm_statistics)

    # ---- training -----------------------------------------------------------------------------
    def fit(self) -> dict:
        start = time.time()
        for self.epoch in range(self.epoch, self.cfg.train.epochs):
            self.train_epoch()
            if self.stop.requested(self.accelerator):  # a signal after the epoch's last check reached one rank
                self.save()
                log.warning("stopped by %s at step %d (epoch %d, step %d of %d); checkpoint written, resume with "
                            "--resume auto", self.stop.cause(), self.global_step, self.epoch + 1,
                            self.step_in_epoch, self.steps_per_epoch)
                return {"stopped": True, "global_step": self.global_step}
            self.step_in_epoch = 0
            epochs_done = self.epoch + 1
            if epochs_done % self.cfg.train.eval_every == 0 or epochs_done == self.cfg.train.epochs:
                self.log_metrics({"epoch": epochs_done, **self.evaluate()}, kind="eval")
            self.save(epoch_done=True)
        summary = {"method": self.cfg.method, "student": self.cfg.student.arch, "teacher": self.cfg.teacher.arch,
                   "epochs": self.cfg.train.epochs, "wall_s": round(time.time() - start, 1),
                   "skipped_steps": self.skipped_steps, **(self.history[-1] if self.history else {})}
        if self.accelerator.is_main_process:
            self.export_student(self.run_dir / "student.safetensors")
            self.export_student(self.run_dir / "student")
            if self.ema is not None and self.cfg.ema.export:
                for path in (self.run_dir / "student_ema.safetensors", self.run_dir / "student_ema"):
                    export_network(self.ema.module.model, path, self.cfg.data.image_size, self.cfg.data.val_resize)
            self.writer.close()
        self.accelerator.print("SUMMARY " + json.dumps(summary))
        return summary

    def train_epoch(self):
        t = self.cfg.train
        self.model.train()
        self.train_loader.set_epoch(self.epoch, start_step=self.step_in_epoch)
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}",
                   disable=not self.accelerator.is_main_process, dynamic_ncols=True, mininterval=2.0)
        window_start, window_steps = time.time(), 0
        for batch in self.train_loader:
            if self.step_in_epoch >= self.steps_per_epoch:
                break
            terms = self.train_step(batch)
            self.step_in_epoch += 1
            self.global_step += 1
            window_steps += 1
            bar.update(1)
            last = self.step_in_epoch == self.steps_per_epoch
            log_now = self.global_step % t.log_every == 0 or last
            save_now = bool(t.checkpoint_every) and self.global_step % t.checkpoint_every == 0 and not last
            if not (log_now or save_now):  # the steady state: nothing read from the device, no collective
                if self.stop.requested(self.accelerator, collective=False):
                    break
                continue
            self.read_nonfinite()  # before a checkpoint: a non-finite step must never be saved as good
            if log_now:
                rate = window_steps * self.batch_plan.global_batch / (time.time() - window_start)
                values = dict(zip(terms, torch.stack(list(terms.values())).tolist()))
                bar.set_postfix({"img/s": f"{rate:.0f}", **{k: f"{v:.3f}" for k, v in values.items()}})
                self.log_metrics({"epoch": self.epoch, "step": self.global_step, "images_per_s": rate,
                                  "lr": self.optimizer.param_groups[0]["lr"], "loss": sum(values.values()),
                                  **{f"loss/{k}": v for k, v in values.items()}}, kind="train")
                window_start, window_steps = time.time(), 0
            if save_now:
                self.save()
            if self.stop.requested(self.accelerator):
                break
        bar.close()

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimizer step that never waits on the host; returns the detached loss terms."""
        images, labels = batch["images"], batch["labels"].repeat(self.views)
        mix_lam = batch.get("mix_lam")
        if mix_lam is not None:  # consistent mixup / CutMix: mixed once, here, for teacher and student alike
            images = mix_images(images, mix_lam, batch["mix_box"])
        if images.device.type == "cuda":  # loaders deliver channels_last already: then this is free
            images = images.contiguous(memory_format=torch.channels_last)
        self.buffers.take()  # what a skipped step puts back
        with self.accelerator.autocast():
            teacher_out = self.teacher_outputs(batch, images)
            terms = self.step_fn(images, labels, teacher_out, self.views, batch.get("index"), mix_lam)
            loss = sum(terms.values())
        # A non-finite loss turns this rank's gradients to NaN, and DDP's gradient all-reduce carries that
        # to every rank (a term can be non-finite while its gradient is not): the flag below is then the
        # same on every rank without a collective of its own.
        self.accelerator.backward(loss * torch.where(loss.isfinite(), 1.0, math.nan))
        skipped = self.nonfinite.check(terms, self.global_step + 1)
        self.optimizer.optimizer.found_inf = skipped.float()  # the fused SGD skips the update on the device
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.restore_if_skipped(skipped)
        self.scheduler.step_update(self.global_step + 1)
        if self.ema is not None:  # after the buffers' restore: a skipped step leaves the average as it was
            self.ema.update(self.distiller.student, self.global_step + 1, skipped)
        return {k: v.detach() for k, v in terms.items()}

    def teacher_outputs(self, batch: dict, images: torch.Tensor) -> NetOutput | None:
        """The teacher's logits and features of this step's images (None when no method needs a teacher):
        its forward, or its outputs rebuilt from the records the batch carries (--teacher.cache)."""
        if self.cache is not None:
            return cached_teacher(batch, self.cache)
        return self.teacher_forward(images) if self.teacher_fn is not None else None

    def teacher_forward(self, images: torch.Tensor) -> NetOutput:
        with torch.inference_mode():
            logits, features = self.teacher_fn(images)
        # Inference tensors cannot be saved for backward: the losses get fp32 copies (B x C and B x d only).
        return NetOutput(logits.to(torch.float32, copy=True), features.to(torch.float32, copy=True))

    def restore_if_skipped(self, skipped: torch.Tensor):
        """Every buffer the forward moved goes back where `skipped` (the step's device flag) is set."""
        self.buffers.restore_if(skipped)
        for method in self.distiller.methods:
            method.restore_if_skipped(skipped)

    def read_nonfinite(self):
        """Read the device's record (a host sync): count the skipped steps, or stop naming the first
        non-finite step and its loss terms."""
        found = self.nonfinite.read()
        if found is None:
            return
        count, first, terms = found
        where = (f"step {first} (epoch {self.epoch + 1}), loss terms "
                 f"{', '.join(terms) or '(none here: another process, or the gradients alone)'}")
        if not self.cfg.train.skip_nonfinite:
            latest = checkpoint.find_latest(self.run_dir)
            kept = f"the last good checkpoint {latest} is kept" if latest else "no checkpoint was written yet"
            raise NonFiniteLossError(f"non-finite loss at {where}; stopping: {kept} (resume with --resume auto, "
                                     "e.g. with a lower train.lr, or set train.skip_nonfinite to skip such steps)")
        self.skipped_steps += count
        log.warning("skipped %d non-finite step(s), the first at %s (%d skipped so far)", count, where,
                    self.skipped_steps)
        self.log_metrics({"step": first, "skipped_steps": self.skipped_steps}, kind="skip")

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        self.sync_batchnorm_statistics()
        distiller = self.accelerator.unwrap_model(self.model)
        networks = {"student": distiller.student}
        if self.ema is not None:
            networks["ema"] = self.ema.module
        for method in distiller.methods:
            networks.update(method.extra_networks())
        if self.teacher is not None and not any(h.get("teacher_top1") is not None for h in self.history):
            networks["teacher"] = self.teacher  # frozen: evaluated once
        for net in networks.values():
            net.eval()
        # per network: (top1, top5, ReaL top-1, images with ReaL labels) hits among the valid samples
        counts = torch.zeros(len(networks), 4, dtype=torch.int64, device=self.accelerator.device)
        seen = torch.zeros((), dtype=torch.int64, device=self.accelerator.device)
        self.val_loader.set_epoch(0)
        for batch in self.val_loader:
            images, labels, valid = batch["images"], batch["labels"], batch["valid"]
            if images.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            seen += valid.sum()
            with self.accelerator.autocast():
                real = self.real_labels[batch["index"]] if self.real_labels is not None else None
                for i, net in enumerate(networks.values()):
                    logits, _ = net(images)
                    counts[i] += count_hits(logits, labels, valid, real)
        counts = self.accelerator.reduce(counts, "sum")
        seen = self.accelerator.reduce(seen, "sum")
        self.model.train()
        if self.teacher is not None:
            self.teacher.eval()
        metrics = {"val_images": int(seen.item())}
        for i, name in enumerate(networks):
            metrics[f"{name}_top1"] = 100 * counts[i, 0].item() / seen.item()
            metrics[f"{name}_top5"] = 100 * counts[i, 1].item() / seen.item()
            if self.real_labels is not None:
                metrics[f"{name}_real_top1"] = 100 * counts[i, 2].item() / max(1, counts[i, 3].item())
        if self.teacher is not None and "teacher_top1" not in metrics and self.history:  # evaluated once: carried
            real = ("teacher_real_top1",) if self.real_labels is not None else ()
            for key in ("teacher_top1", "teacher_top5", *real):
                metrics[key] = self.history[-1].get(key)
        if self.cache is not None and self.cache.teacher_val:  # measured once by the cache pass
            metrics.update(teacher_top1=self.cache.teacher_val["top1"], teacher_top5=self.cache.teacher_val["top5"])
        self.history.append(metrics)
        return metrics

    def sync_batchnorm_statistics(self):
        """Average BN running statistics over processes (buffers are not broadcast every step)."""
        if self.accelerator.num_processes > 1:
            timm.utils.distribute_bn(self.accelerator.unwrap_model(self.model), self.accelerator.num_processes,
                                     reduce=True)
            if self.ema is not None:
                timm.utils.distribute_bn(self.ema.module, self.accelerator.num_processes, reduce=True)

    # ---- checkpoints ----------------------------------------------------------------------------
    def progress(self, epoch_done: bool = False) -> dict:
        """Where the run is (pipeline/run_checkpoints.PROGRESS); after an epoch, the start of the next one."""
        epoch, step_in_epoch = (self.epoch + 1, 0) if epoch_done else (self.epoch, self.step_in_epoch)
        return {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
                "skipped_steps": self.skipped_steps, "history": self.history}

    def save(self, epoch_done: bool = False):
        self.checkpoints.save(self.progress(epoch_done))

    def restore_progress(self, progress: dict | None):
        if progress is not None:
            for key in PROGRESS:
                setattr(self, key, progress[key])

    # ---- outputs ------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict, kind: str):
        if not self.accelerator.is_main_process:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": kind, "time": time.time(), **metrics}) + "\n")
        step = metrics.get("step", self.global_step)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and v is not None and math.isfinite(v) and k not in ("step", "epoch"):
                self.writer.add_scalar(f"{kind}/{k}", v, step)
        if kind == "eval":
            self.accelerator.print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in metrics.items()))

    def export_student(self, path: Path):
        """`*.safetensors`: the bare timm weights; otherwise a timm-native folder (pipeline/models.export_network)."""
        export_network(self.distiller.student.model, path, self.cfg.data.image_size, self.cfg.data.val_resize)
