"""The accelerate training loop: distil a frozen teacher into a student with any `+`-joined methods.

Read top to bottom: `Trainer.__init__` is the table of contents (accelerator, loaders, networks,
methods, optimizer, schedule, resume); `fit` runs epochs; `train_epoch` runs steps; `evaluate` is
exact top-1/top-5 over the validation set with every image counted once across processes.

The steady-state step never waits on the host (../shared/design.md, "The hot path"): a non-finite
loss or gradient is detected and the update skipped on the device, and the record of it, the loss
values and the stop-signal agreement are read only at logging, checkpoint and epoch-end steps.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import timm.optim
import timm.utils
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, set_seed
from accelerate.utils import load as load_pickle
from timm.scheduler import create_scheduler_v2
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from pipeline import checkpoint
from pipeline.config import Config, to_dict
from pipeline.data import build_loaders
from pipeline.device import use_cpu
from pipeline.distiller import Distiller
from pipeline.errors import BadInputError, MissingInputError
from pipeline.metrics import count_hits, real_label_table
from pipeline.methods import METHODS, MethodContext, NetOutput, build_methods, parse_method
from pipeline.models import Network, create_network, fold_batchnorm, freeze, save_timm_folder, save_weights

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


class ResumeMismatchError(BadInputError):
    """The checkpoint belongs to another experiment (e.g. another --method): never fall back silently."""


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
        self.stop_signal: int | None = None
        self.install_signal_handlers()  # early: a signal during setup must not kill a rank mid-resume
        self.accelerator = self.create_accelerator()
        set_seed(cfg.train.seed)  # same initial weights on every process (DDP also broadcasts them)
        self.run_dir = self.create_run_dir()
        self.train_loader, self.val_loader = self.create_loaders()
        self.real_labels = self.create_real_labels()
        self.teacher_fn = None  # the teacher as the step runs it (BatchNorm folded, compiled)
        self.teacher = self.create_teacher() if self.needs_teacher else None
        self.model = self.create_distiller()
        self.optimizer = self.create_optimizer()
        self.scheduler = self.create_scheduler()
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.step_fn = self.create_compiled_step()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.nonfinite: torch.Tensor | None = None  # the device's record of non-finite steps (record_nonfinite)
        self.epoch, self.step_in_epoch, self.global_step, self.skipped_steps = 0, 0, 0, 0
        self.history: list[dict] = []
        self.last_saved: tuple | None = None  # (global_step, epoch, step_in_epoch) of the newest checkpoint
        if resume:
            self.resume(resume)
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
        return Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no", kwargs_handlers=[ddp, pg])

    def create_run_dir(self) -> Path:
        t = self.cfg.train
        name = t.name or f"{self.cfg.method.replace('+', '_')}-{self.cfg.teacher.arch}-{self.cfg.student.arch}"
        run_dir = Path(t.output_dir) / name
        if self.accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        return run_dir

    def create_loaders(self):
        world = self.accelerator.num_processes
        if self.cfg.train.batch_size % world:
            raise BadInputError(f"train.batch_size {self.cfg.train.batch_size} is not divisible by {world} processes: "
                                f"use a multiple of {world}")
        self.batch_per_process = self.cfg.train.batch_size // world
        with self.accelerator.main_process_first():  # the demo data is written once, by rank 0
            train, val = build_loaders(
                self.cfg.data, batch_size=self.batch_per_process, views=self.views, seed=self.cfg.train.seed,
                rank=self.accelerator.process_index, world=world, device=self.accelerator.device)
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

    def create_teacher(self) -> Network:
        if not (self.cfg.teacher.checkpoint or self.cfg.teacher.pretrained):
            raise BadInputError("the method needs a teacher: set teacher.checkpoint (a local .safetensors or state "
                             "dict) or teacher.pretrained, or set teacher.train_if_missing to train one first")
        return self.place_teacher(freeze(self.create_network(self.cfg.teacher)))

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
        ctx = MethodContext(cfg=self.cfg, student_dim=student.feature_dim, teacher_dim=teacher_dim,
                            num_classes=self.train_loader.num_classes,
                            num_train_samples=self.train_loader.num_samples,
                            sample_labels=getattr(self.train_loader, "sample_labels", None),
                            build_teacher_like=lambda: self.create_network(
                                type(self.cfg.teacher)(arch=self.cfg.teacher.arch)))
        model = Distiller(student, build_methods(self.cfg.method, ctx), self.cfg.train.ce_weight)
        model = model.to(self.accelerator.device)
        if self.accelerator.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def create_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        # No weight decay on biases, norm layers (1-d) and method scalars such as ICD's tau and b.
        no_decay = {f"methods.{i}.{n}" for i, m in enumerate(self.model.methods) for n in m.no_weight_decay()}
        groups = timm.optim.param_groups_weight_decay(self.model, t.weight_decay, no_weight_decay_list=no_decay)
        self.base_lr = t.lr * t.batch_size / 256
        # Fused (one kernel per step on CUDA and CPU), and it takes `found_inf`: a non-finite step is
        # skipped on the device. Momentum buffers start at zero (the same first update as torch's
        # lazily cloned ones): torch's fused kernel leaves a lazily created buffer unwritten when the
        # very first step is skipped.
        optimizer = torch.optim.SGD(groups, lr=self.base_lr, momentum=t.momentum, fused=True)
        for group in groups:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return optimizer

    def create_scheduler(self):
        t = self.cfg.train
        scheduler, _ = create_scheduler_v2(
            self.optimizer, sched="multistep" if t.sched == "step" else "cosine", num_epochs=t.epochs,
            decay_milestones=t.decay_epochs, decay_rate=t.decay_rate, warmup_epochs=t.warmup_epochs,
            warmup_lr=t.warmup_lr, min_lr=t.min_lr, step_on_epochs=False, updates_per_epoch=self.steps_per_epoch)
        scheduler.step_update(0)
        return scheduler

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

    # ---- training -----------------------------------------------------------------------------
    def fit(self) -> dict:
        start = time.time()
        for self.epoch in range(self.epoch, self.cfg.train.epochs):
            self.train_epoch()
            if self.stop_requested():  # collective: a signal landing after the epoch's last check reached one rank
                self.save()
                cause = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal to another process"
                log.warning("stopped by %s at step %d (epoch %d, step %d of %d); checkpoint written, resume with "
                            "--resume auto", cause, self.global_step, self.epoch + 1, self.step_in_epoch,
                            self.steps_per_epoch)
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
                if self.stop_requested(collective=False):
                    break
                continue
            self.read_nonfinite()  # before a checkpoint: a non-finite step must never be saved as good
            if log_now:
                rate = window_steps * t.batch_size / (time.time() - window_start)
                values = dict(zip(terms, torch.stack(list(terms.values())).tolist()))
                bar.set_postfix({"img/s": f"{rate:.0f}", **{k: f"{v:.3f}" for k, v in values.items()}})
                self.log_metrics({"epoch": self.epoch, "step": self.global_step, "images_per_s": rate,
                                  "lr": self.optimizer.param_groups[0]["lr"], "loss": sum(values.values()),
                                  **{f"loss/{k}": v for k, v in values.items()}}, kind="train")
                window_start, window_steps = time.time(), 0
            if save_now:
                self.save()
            if self.stop_requested():
                break
        bar.close()

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimizer step that never waits on the host; returns the detached loss terms."""
        images, labels = batch["images"], batch["labels"].repeat(self.views)
        if images.device.type == "cuda":  # loaders deliver channels_last already: then this is free
            images = images.contiguous(memory_format=torch.channels_last)
        with self.accelerator.autocast():
            teacher_out = self.teacher_forward(images) if self.teacher_fn is not None else None
            terms = self.step_fn(images, labels, teacher_out, self.views, batch.get("index"))
            loss = sum(terms.values())
        # A non-finite loss turns this rank's gradients to NaN, and DDP's gradient all-reduce carries that
        # to every rank (a term can be non-finite while its gradient is not): the gradient check below is
        # then collective without a collective of its own.
        self.accelerator.backward(loss * torch.where(loss.isfinite(), 1.0, math.nan))
        self.record_nonfinite(terms)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(self.global_step + 1)
        return {k: v.detach() for k, v in terms.items()}

    def teacher_forward(self, images: torch.Tensor) -> NetOutput:
        with torch.inference_mode():
            logits, features = self.teacher_fn(images)
        # Inference tensors cannot be saved for backward: the losses get fp32 copies (B x C and B x d only).
        return NetOutput(logits.to(torch.float32, copy=True), features.to(torch.float32, copy=True))

    def record_nonfinite(self, terms: dict[str, torch.Tensor]):
        """On the device: skip the update when a gradient is non-finite (the fused SGD's found_inf leaves
        weights and momentum untouched), count it, and keep the first such step and its loss terms for
        `read_nonfinite`. Without train.skip_nonfinite every update after the first bad step is skipped
        too, until the next read stops the run."""
        grads = [p.grad for p in self.params if p.grad is not None]
        # Per-tensor 2-norms: one read of every gradient (4x faster than max |g| on CPU); a norm that
        # overflows fp32 (elements ~1e19) counts as non-finite, as the total grad norm did before.
        bad = ~torch.stack(torch._foreach_norm(grads)).isfinite().all()
        if self.nonfinite is None:  # [bad steps since the last read, the first one's step, its terms]
            self.term_names = list(terms)
            self.nonfinite = torch.zeros(2 + len(terms), dtype=torch.float64, device=bad.device)
        if not self.cfg.train.skip_nonfinite:
            bad = bad | (self.nonfinite[0] > 0)
        self.optimizer.optimizer.found_inf = bad.float()
        first = bad & (self.nonfinite[0] == 0)
        step = torch.full((1,), self.global_step + 1, dtype=torch.float64, device=bad.device)
        now = torch.cat([step, torch.stack([v.detach().to(torch.float64) for v in terms.values()])])
        self.nonfinite[1:] = torch.where(first, now, self.nonfinite[1:])
        self.nonfinite[0] += bad

    def read_nonfinite(self):
        """Read the device's record (a host sync, so at logging, checkpoint and epoch-end steps only):
        count the skipped steps, or stop naming the first non-finite step and its loss terms."""
        if self.nonfinite is None:
            return
        count, first, *values = self.nonfinite.tolist()
        if not count:
            return
        self.nonfinite.zero_()
        bad = [k for k, v in zip(self.term_names, values) if not math.isfinite(v)]
        where = (f"step {int(first)} (epoch {self.epoch + 1}), loss terms "
                 f"{', '.join(bad) or '(none here: another process, or the gradients alone)'}")
        if not self.cfg.train.skip_nonfinite:
            latest = checkpoint.find_latest(self.run_dir)
            kept = f"the last good checkpoint {latest} is kept" if latest else "no checkpoint was written yet"
            raise NonFiniteLossError(f"non-finite loss at {where}; stopping: {kept} (resume with --resume auto, "
                                     "e.g. with a lower train.lr, or set train.skip_nonfinite to skip such steps)")
        self.skipped_steps += int(count)
        log.warning("skipped %d non-finite step(s), the first at %s (%d skipped so far)", count, where,
                    self.skipped_steps)
        self.log_metrics({"step": int(first), "skipped_steps": self.skipped_steps}, kind="skip")

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        self.sync_batchnorm_statistics()
        distiller = self.accelerator.unwrap_model(self.model)
        networks = {"student": distiller.student}
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
        self.history.append(metrics)
        return metrics

    def sync_batchnorm_statistics(self):
        """Average BN running statistics over processes (buffers are not broadcast every step)."""
        if self.accelerator.num_processes > 1:
            timm.utils.distribute_bn(self.accelerator.unwrap_model(self.model), self.accelerator.num_processes,
                                     reduce=True)

    # ---- checkpoints, resume, signals ---------------------------------------------------------
    def trainer_state(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "skipped_steps": self.skipped_steps, "history": self.history, "method": self.cfg.method,
                "world_size": self.accelerator.num_processes}

    def save(self, epoch_done: bool = False):
        state = self.trainer_state()
        if epoch_done:  # the next run starts the following epoch
            state.update(epoch=self.epoch + 1, step_in_epoch=0)
        key = (state["global_step"], state["epoch"], state["step_in_epoch"])
        if key == self.last_saved:  # e.g. a stop right after a periodic checkpoint: that one is this state
            return
        self.sync_batchnorm_statistics()
        loader_state = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        path = checkpoint.save_checkpoint(self.accelerator, self.run_dir, state, self.cfg.train.keep_checkpoints,
                                          loader_state)
        self.last_saved = key
        log.info("checkpoint %s", path)

    def resume(self, resume: str):
        """'auto': the newest complete checkpoint of the run, falling back to older ones when one fails to
        load (a truncated file is skipped with a warning, garbage content fails here); or an explicit path."""
        if resume == "auto":
            candidates = checkpoint.complete_checkpoints(self.run_dir)
            if not candidates:
                log.info("--resume auto: no complete checkpoint in %s, starting fresh", self.run_dir / "checkpoints")
                return
        else:
            candidates = [Path(resume)]
            if not checkpoint.is_complete(candidates[0]):
                raise MissingInputError(f"--resume {resume}: not a complete checkpoint (no {checkpoint.COMPLETE} "
                                        "manifest, or a file is missing or truncated)")
        for path in candidates:
            error = None
            try:
                state = self.load_checkpoint(path)
            except ResumeMismatchError:
                raise
            except Exception as e:
                error = e
            # Collective: a file that fails on one rank only (its RNG state) must move every rank back.
            if not checkpoint.any_process(self.accelerator, error is not None):
                break
            cause = f"{type(error).__name__}: {error}" if error is not None else "it failed on another process"
            if resume != "auto" or path == candidates[-1]:
                older = "; no older complete checkpoint to fall back to" if resume == "auto" else ""
                raise RuntimeError(f"cannot load checkpoint {path} ({cause}){older}") from error
            log.warning("cannot load checkpoint %s (%s); falling back to the one before it", path, cause)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.skipped_steps = state["global_step"], state["skipped_steps"]
        self.history = state["history"]
        self.last_saved = (self.global_step, self.epoch, self.step_in_epoch)
        log.info("resumed from %s at epoch %d, step %d of the epoch", path, self.epoch + 1, self.step_in_epoch)

    def load_checkpoint(self, path: Path) -> dict:
        state = checkpoint.read_trainer_state(path)
        if state["method"] != self.cfg.method:
            raise ResumeMismatchError(f"{path} was written by --method {state['method']}, not {self.cfg.method}")
        rng = path / f"{checkpoint.RNG_FILE}_{self.accelerator.process_index}.pkl"
        if rng.is_file():
            load_pickle(rng)  # accelerate ignores an unreadable RNG state; a damaged one must fail here instead
        else:
            log.warning("%s has no RNG state for process %d (written by %s processes, now %d): continuing, "
                        "but not bit-exactly", path, self.accelerator.process_index, state.get("world_size", "?"),
                        self.accelerator.num_processes)
        self.accelerator.load_state(str(path))
        if hasattr(self.train_loader, "load_state_dict"):  # DALI: its pipeline's state, to continue exactly
            loader_state = checkpoint.read_loader_state(path, self.accelerator.process_index)
            self.train_loader.load_state_dict(loader_state, where=str(path))
        for group in self.optimizer.param_groups:  # a checkpoint from before the fused optimizer says False
            group["fused"] = True
        return state

    def install_signal_handlers(self):
        """SIGUSR1 (Slurm's warning before the time limit, forwarded by launch/slurm/imagenet.sbatch and the
        torchrun agent) or SIGTERM (preemption, the agent's shutdown): finish the step, checkpoint, exit."""
        def request_stop(signum, frame):
            self.stop_signal = signum
        if threading.current_thread() is not threading.main_thread():
            log.warning("Trainer built outside the main thread: SIGUSR1/SIGTERM will not checkpoint before exiting")
            return
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, request_stop)

    def stop_requested(self, collective: bool = True) -> bool:
        """Collective: a signal may reach one rank only, so all agree before anyone stops. Between
        logging steps (collective=False) a single process stops at once; several wait for the next check."""
        if not collective and self.accelerator.num_processes > 1:
            return False
        stop = checkpoint.any_process(self.accelerator, self.stop_signal is not None)
        if stop and self.stop_signal is None:
            self.stop_signal = 0  # this process got no signal itself
        return stop

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
        """`*.safetensors`: the bare timm weights (`timm.create_model(arch, num_classes=...)` loads them);
        otherwise a timm-native folder (`timm.create_model("local-dir:PATH", pretrained=True)`). Atomic."""
        student = self.accelerator.unwrap_model(self.model).student.model
        if path.suffix == ".safetensors":
            save_weights(student, path)
        else:
            save_timm_folder(student, path, self.cfg.data.image_size, self.cfg.data.val_resize)
