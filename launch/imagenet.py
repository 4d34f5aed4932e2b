"""Distil a timm teacher into a timm student: `accelerate launch launch/imagenet.py --method icd+kd`.

With no --config, runs the embedded demo (configs/demo.yaml): Fashion-MNIST photos as JPEG files,
a teacher trained and cached on first run. Every config key is a flag too: --train.epochs 2.
"""
import copy
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from accelerate import PartialState  # noqa: E402

from pipeline.benchmark import run_benchmark  # noqa: E402
from pipeline.config import parse_args  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.device import use_cpu  # noqa: E402
from pipeline.methods import METHODS, parse_method  # noqa: E402
from pipeline.preflight import check_inputs  # noqa: E402
from pipeline.trainer import Trainer, process_group_kwargs  # noqa: E402
from pipeline.baseline import print_what_distillation_buys, student_alone  # noqa: E402

log = logging.getLogger("launch")


def train_missing_teacher(cfg):
    """The demo has no pretrained weights offline: train the teacher with `--method none` once, cache it."""
    teacher_cfg = copy.deepcopy(cfg)
    teacher_cfg.method = "none"
    teacher_cfg.student = copy.deepcopy(cfg.teacher)
    teacher_cfg.student.checkpoint = ""
    teacher_cfg.train.epochs = cfg.teacher.train_epochs or cfg.train.epochs
    if cfg.teacher.train_per_class >= 0:  # the teacher may see more of the photos than the student
        teacher_cfg.data.per_class = cfg.teacher.train_per_class
    if cfg.teacher.train_batch_size:  # per process, like train.batch_size
        teacher_cfg.train.batch_size, teacher_cfg.train.global_batch_size = cfg.teacher.train_batch_size, 0
    teacher_cfg.train.baseline = False
    # Named after the cache file: a run folder left by another teacher setting must not be resumed as this one.
    teacher_cfg.train.name = f"teacher-{Path(cfg.teacher.checkpoint).stem}"
    log.warning("teacher checkpoint %s is missing: training the teacher (%s, %d epochs, --method none) first",
                cfg.teacher.checkpoint, cfg.teacher.arch, teacher_cfg.train.epochs)
    trainer = Trainer(teacher_cfg, resume="auto")
    if trainer.fit().get("stopped"):  # preempted: a half-trained teacher must not be cached as the teacher
        return False
    if trainer.accelerator.is_main_process:
        Path(cfg.teacher.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        trainer.export_student(Path(cfg.teacher.checkpoint))
        log.warning("teacher cached at %s", cfg.teacher.checkpoint)
    trainer.accelerator.wait_for_everyone()
    return True


def main(argv=None):
    """Expected user errors (pipeline.errors.UserError: a bad value, a missing file, a mismatched checkpoint)
    are one line on stderr and exit status 2; anything else keeps its traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file is noise
    try:
        run(*parse_args(argv))
    except UserError as e:
        # One write of the whole line: under PYTHONUNBUFFERED print() writes the text and the newline
        # separately, and two processes failing at once then garble each other's lines.
        sys.stderr.write(f"error: {e}\n")
        sys.stderr.flush()
        sys.exit(2)


def run(cfg, args):
    names = parse_method(cfg.method)
    # The same choices the Trainer makes; the process group is created here, so its timeout is set here.
    # use_cpu raises CudaUnavailableError (a UserError) before any process group waits for the other ranks.
    state = PartialState(cpu=use_cpu(cfg), **process_group_kwargs(cfg))
    if not state.is_main_process:  # one process logs; the others warn only
        logging.getLogger().setLevel(logging.WARNING)
    if args.benchmark:  # --benchmark step|loader: measure, do not train (pipeline/benchmark.py)
        return run_benchmark(cfg, args)
    needs_teacher = any(METHODS[n].needs_teacher for n in names)
    check_inputs(cfg, needs_teacher, state.num_processes, args.resume)  # before anything trains for minutes
    if needs_teacher and cfg.teacher.train_if_missing and not Path(cfg.teacher.checkpoint).is_file():
        if not train_missing_teacher(cfg):
            return  # stopped by a signal, checkpoint written: exit 0, the requeued job resumes the teacher
    # A run stopped by SIGUSR1/SIGTERM returns after its checkpoint and exits 0 too (a non-zero worker exit
    # would make the torchrun agent report a crash); requeueing is the Slurm batch script's decision.
    alone = student_alone(cfg, state.num_processes) if cfg.train.baseline and needs_teacher else None  # what distillation buys
    if alone is not None and alone.get("stopped"):
        return  # as above: the requeued job resumes the student-alone run
    summary = Trainer(cfg, resume=args.resume).fit()
    if alone and not summary.get("stopped") and state.is_main_process:
        print_what_distillation_buys(cfg, alone, summary)


if __name__ == "__main__":
    main()
