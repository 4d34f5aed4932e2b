"""The first thing to run on a new GPU node: does everything that needs the GPU work, on every GPU?

    .venv/bin/python bench/gpu_check.py --out gpu_check/ [--quick] [--skip NAME,...] [--bench-args "..."]

Checks (each passes, fails or is skipped with its reason; a failure makes the exit status 1):
  kernels            every fused Triton loss (kernels.*_loss, backend triton) against kernels/reference.py in
                     float64 on CUDA: fp32, bf16, and the mixed inputs production feeds (bf16 student with fp32
                     teacher logits for kd/dkd, bf16 M_s(f_s) with fp32 teacher features for ccd), at production
                     and awkward sizes; the loss and every gradient, relative error ||out - ref|| / ||ref||
                     under 1e-4 (fp32) or 1e-2 (bf16, mixed), NaN never passing.
  compile_step:<m>   for kd, icd+kd, dccd, crd+kd and slkd: the trainer's compiled module (the Distiller: student
                     forward, method terms) under torch.compile(fullgraph=True), 20 steps of forward, backward and
                     SGD, recompiling an error after the first step. CUDA: inductor, bf16 autocast. Without CUDA,
                     skipped unless --cpu-compile (the "eager" backend, fp32, tiny batch). --quick leaves it out
                     (ddp_step compiles every method too).
  crd_draws_compiled CRD's counter-based negative draws (pipeline/methods/draws.py) compiled by inductor on CUDA
                     equal the eager ones (64-bit wrapping arithmetic in Triton).
  ddp_step:<spec>    one `accelerate launch` over every visible GPU (NCCL, one process per GPU;
                     bench/gpu_check_ddp.py): for each method spec, the real Trainer.train_step (synthetic batch,
                     random teacher) compiled as the trainer compiles it, with accelerate's bf16 autocast, DDP and
                     the fused SGD: 11 warm-up steps, then 3 under torch.cuda.set_sync_debug_mode("error") (any
                     host sync fails) and error_on_recompile, then a NaN pixel on the last GPU: the step must be
                     skipped on every GPU with the whole state (parameters, buffers, optimizer) bitwise unchanged.
                     Specs: kd, icd+kd, icd+kd (global negatives), dccd, crd+kd, crd+kd (shared negatives), slkd,
                     none (--quick: kd, dccd, crd+kd, slkd).
  device_mapping     from the same launch: rank r of a node on cuda:LOCAL_RANK (its current device, its
                     parameters and its batch), no two ranks of a node on one GPU, one rank per GPU.
  skipped_step       bench/skipped_step.py over every GPU, on the generated dataset (DALI): NaN-input and
                     inf-gradient steps leave the whole state bitwise as it was and the run continues as one
                     that never took them, for kd, icd+kd, dccd, crd+kd, slkd (--quick: kd, crd+kd).
  dali_decode        DALI's GPU ("mixed", nvJPEG) decode against its CPU decode (libjpeg-turbo) on the 20
                     real ImageNet JPEGs of the foolbox wheel: mean absolute pixel difference (0..255) per
                     image, failing above 4. Without CUDA: DALI's CPU decode against PIL's (a sanity check).
  dali_two_views, dali_validation, dali_webdataset, dali_resume_mid_epoch, dali_awkward_jpegs, dali_memory
                     the DALI loaders on the GPU through pipeline.data.build_loaders, on datasets written into
                     <out>/data (bench/gpu_check_data.py): two views, every val image once over two evaluations,
                     webdataset shards, a loader state saved and restored mid-epoch (same samples and pixels),
                     CMYK, grayscale, PNG-named-.JPEG and 27-megapixel JPEGs through the mixed decoder, and the
                     memory both pipelines hold (device and host, limits in gpu_check_data.py). Without CUDA:
                     DALI's CPU decoder (dali_memory skipped).
  benchmark_step, benchmark_loader, benchmark_sweep
                     `launch/imagenet.py --benchmark step|loader <--bench-args>` and `--benchmark step
                     --benchmark-batches 32,64,128,256` (--quick: 64,256) as subprocesses; their last line
                     `BENCHMARK {json}` is recorded (images/s, time split, peak memory; images/s per batch).
                     CUDA only (CPU figures are not a GPU node's).
  peak_memory        torch.cuda.max_memory_allocated over this script's own checks. CUDA only.
Writes <out>/gpu_check.md and <out>/gpu_check.json. Without CUDA it runs what can run, lists the skipped
checks by name with the reason, and exits 0 unless a check that ran failed. Time on a cold cache (compile
and autotuning included): not measured (this was written without a GPU); `--quick` is the 5-minute variant
it is meant to be, and each check's seconds are in the report.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, markdown_table  # noqa: E402

COMPILE_METHODS = ("kd", "icd+kd", "dccd", "crd+kd", "slkd")
DDP_SPECS = ("kd", "icd+kd", "icd+kd --icd.negatives global", "dccd", "crd+kd", "crd+kd --crd.shared_negatives true",
             "slkd", "none")
QUICK_DDP_SPECS = ("kd", "dccd", "crd+kd", "slkd")
SKIP_METHODS, QUICK_SKIP_METHODS = ("kd", "icd+kd", "dccd", "crd+kd", "slkd"), ("kd", "crd+kd")
SWEEP, QUICK_SWEEP = "32,64,128,256", "64,256"
CHECKS = ("kernels", *(f"compile_step:{m}" for m in COMPILE_METHODS), "crd_draws_compiled",
          *(f"ddp_step:{s}" for s in DDP_SPECS), "device_mapping", "skipped_step", "dali_decode",
          "dali_two_views", "dali_validation", "dali_webdataset", "dali_resume_mid_epoch", "dali_awkward_jpegs",
          "dali_memory", "benchmark_step", "benchmark_sweep", "benchmark_loader", "peak_memory")
TOL = {"fp32": 1e-4, "bf16": 1e-2, "mixed": 1e-2}
DECODE_LIMIT = 4.0  # mean |difference| per image, 0..255; decoders differ in IDCT and chroma upsampling
# The ImageNet pair at 224 px on one GPU (a random teacher where its weights are absent: the same cost); the
# loader reads the demo data unless --bench-args names a data.root (e.g. --config configs/imagenet/r34_r18.yaml).
DEFAULT_BENCH_ARGS = ("--method kd --teacher.arch resnet34 --student.arch resnet18 --data.image_size 224 "
                      "--data.val_resize 256 --train.batch_size 256 --benchmark-steps 20 --benchmark-warmup 3")
KERNEL_DEVICE = "cuda"  # where the kernels check runs (a CPU dry run of this script's own logic sets "cpu")
NO_CUDA = "needs CUDA (torch.cuda.is_available() is False)"


class Skip(Exception):
    """The check cannot run here; its message is the reason."""


# ---------------------------------------------------------------------------------------------- kernels
def _rel_err(out, ref) -> float:
    import torch

    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _kernel_cases():
    """(module, label, dtype kind, make_inputs) with make_inputs(device) -> (args, trained arg positions)."""
    import torch
    import torch.nn.functional as F

    def logits(shape, dtype, seed, device, scale=3.0):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)

    dtypes = {"fp32": (torch.float32, torch.float32), "bf16": (torch.bfloat16, torch.bfloat16),
              "mixed": (torch.bfloat16, torch.float32)}  # (student, teacher)
    cases = []
    for kind, (s_dt, t_dt) in dtypes.items():
        for B, C in ((256, 1000), (7, 1003), (4, 21843)):
            cases.append(("kd", f"B={B} C={C}", kind, lambda dev, B=B, C=C, s=s_dt, t=t_dt, seed=len(cases): (
                [logits((B, C), s, seed, dev), logits((B, C), t, seed + 1, dev), 4.0], [0])))
            cases.append(("dkd", f"B={B} C={C}", kind, lambda dev, B=B, C=C, s=s_dt, t=t_dt, seed=len(cases): (
                [logits((B, C), s, seed, dev), logits((B, C), s, seed + 1, dev), logits((B, C), t, seed + 2, dev),
                 logits((B, C), t, seed + 3, dev), 4.0], [0, 1])))
        for B, d in ((256, 512), (256, 2048), (7, 24)):
            cases.append(("ccd", f"B={B} d={d}", kind, lambda dev, B=B, d=d, s=s_dt, t=t_dt, seed=len(cases): (
                [logits((B, d), s, seed, dev, 1.0), logits((B, d), t, seed + 1, dev, 1.0).relu(), 2.0], [0])))
        if kind != "mixed":  # icd takes one dtype for both embeddings
            for B, D in ((512, 128), (9, 40)):
                def icd_inputs(dev, B=B, D=D, dt=s_dt, seed=len(cases)):
                    z = [F.normalize(logits((B, D), torch.float32, seed + i, dev), dim=1).to(dt) for i in (0, 1)]
                    return [*z, torch.tensor(1.5, device=dev), torch.tensor(-0.3, device=dev)], [0, 1, 2]
                cases.append(("icd", f"B={B} D={D}", kind, icd_inputs))
    return cases


def check_kernels(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise Skip(NO_CUDA + "; the Triton kernels' interpreter comparison is tests/kernels, not a GPU check")
    import kernels
    from kernels import reference
    from kernels._build import available_modules

    missing = {"kd", "dkd", "icd", "ccd"} - set(available_modules())
    kernels.set_backend("triton")
    rows, worst = [], {}
    for module, label, kind, make in _kernel_cases():
        if module in missing:
            continue
        inputs, trained = make(torch.device(KERNEL_DEVICE))
        leaves = [x.detach().clone().requires_grad_(i in trained) if isinstance(x, torch.Tensor) else x
                  for i, x in enumerate(inputs)]
        loss = 1.5 * getattr(kernels, f"{module}_loss")(*leaves)
        grads = torch.autograd.grad(loss, [leaves[i] for i in trained])
        ref_leaves = [x.detach().double().cpu().requires_grad_(i in trained) if isinstance(x, torch.Tensor) else x
                      for i, x in enumerate(inputs)]
        ref = 1.5 * getattr(reference, f"{module}_loss")(*ref_leaves)
        ref_grads = torch.autograd.grad(ref, [ref_leaves[i] for i in trained])
        errors = [_rel_err(loss, ref)] + [_rel_err(g, r) for g, r in zip(grads, ref_grads)]
        dtypes_ok = all(g.dtype == leaves[i].dtype for g, i in zip(grads, trained))
        ok = max(errors) < TOL[kind] and dtypes_ok
        rows.append({"loss": module, "sizes": label, "dtypes": kind, "loss_err": errors[0],
                     "max_grad_err": max(errors[1:]), "grad_dtypes_ok": dtypes_ok, "tol": TOL[kind], "ok": ok})
        worst[kind] = max(worst.get(kind, 0.0), max(errors))
    failed = [r for r in rows if not r["ok"]]
    detail = (f"{len(rows)} cases, worst relative error " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
              + (f"; FAILED: {', '.join(r['loss'] + ' ' + r['sizes'] + ' ' + r['dtypes'] for r in failed)}" if failed else "")
              + (f"; no Triton module for {', '.join(sorted(missing))}" if missing else ""))
    return {"status": "fail" if failed or missing else "pass", "detail": detail, "figures": {"cases": rows}}


# ------------------------------------------------------------------------------------------ compile step
def check_compile_step(method: str, args) -> dict:
    import torch

    from pipeline.config import Config, apply
    from pipeline.distiller import Distiller
    from pipeline.methods import METHODS, MethodContext, NetOutput, build_methods, parse_method
    from pipeline.models import create_network

    cuda = torch.cuda.is_available()
    if args.quick:
        raise Skip("--quick: ddp_step compiles every method's step too (not fullgraph)")
    if not cuda and not args.cpu_compile:
        raise Skip(NO_CUDA + "; --cpu-compile runs it on CPU with the eager backend (graph capture only; minutes)")
    dev = torch.device("cuda" if cuda else "cpu")
    backend = "inductor" if cuda else "eager"
    size, batch, classes = (args.image_size, args.batch, 1000) if cuda else (32, 4, 10)
    cfg = Config(method=method)
    apply(cfg, {"student": {"arch": args.student}, "teacher": {"arch": args.teacher}}, "gpu_check")
    torch.manual_seed(0)

    def network(arch):
        return create_network(type(cfg.student)(arch=arch), classes, cfg.data.mean, cfg.data.std)

    teacher = network(cfg.teacher.arch).to(dev).eval().requires_grad_(False)
    student = network(cfg.student.arch)
    ctx = MethodContext(cfg=cfg, student_dim=student.feature_dim, teacher_dim=teacher.feature_dim,
                        num_classes=classes, num_train_samples=batch, build_teacher_like=lambda: network(cfg.teacher.arch),
                        sample_labels=lambda: torch.arange(batch) % classes)
    model = Distiller(student, build_methods(method, ctx), cfg.train.ce_weight).to(dev).train()
    if cuda:
        model, teacher = model.to(memory_format=torch.channels_last), teacher.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    views = max(METHODS[n].views for n in parse_method(method))
    g = torch.Generator().manual_seed(0)
    images = torch.randn(views * batch, 3, size, size, generator=g).to(dev)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(classes, (batch,), generator=g).repeat(views).to(dev)
    index = torch.arange(batch, device=dev)
    torch._dynamo.reset()
    step_fn = torch.compile(model, backend=backend, fullgraph=True)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            with torch.no_grad():
                t_logits, t_features = teacher(images)
            terms = step_fn(images, labels, NetOutput(t_logits.float(), t_features.float()), views, index)
            loss = sum(terms.values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    start = time.perf_counter()
    first = step()  # compiles (a graph break raises here: fullgraph=True)
    compile_s = time.perf_counter() - start
    losses = [first]
    with torch._dynamo.config.patch(error_on_recompile=True):
        start = time.perf_counter()
        for _ in range(19):
            losses.append(step())
        if cuda:
            torch.cuda.synchronize()
        steady_ms = 1e3 * (time.perf_counter() - start) / 19
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    detail = (f"{backend} backend, fullgraph, 20 steps without recompiling; first step {compile_s:.1f} s, "
              f"then {steady_ms:.1f} ms/step ({args.student} <- {args.teacher}, {views}x{batch} images at {size} px"
              f"{', bf16 autocast' if cuda else ', fp32'})" + ("" if finite else "; NON-FINITE loss"))
    return {"status": "pass" if finite else "fail", "detail": detail,
            "figures": {"backend": backend, "first_step_s": compile_s, "steady_ms": steady_ms,
                        "final_loss": float(losses[-1])}}


# ------------------------------------------------------------------------------------------------- DALI
def foolbox_jpegs() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")  # foolbox itself needs eagerpy: only its data folder is used
    if spec is None or not spec.submodule_search_locations:
        raise Skip("the foolbox wheel (its data/ holds the 20 ImageNet JPEGs) is not installed")
    files = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg"))
    if len(files) != 20:
        raise Skip(f"expected 20 foolbox ImageNet JPEGs, found {len(files)}")
    return files


def dali_decode(files: list[Path], device: str):
    """Decode `files` with DALI on `device` ("cpu" or "mixed") -> list of HWC uint8 numpy arrays."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(files), num_threads=2, device_id=0 if device == "mixed" else None,
                  prefetch_queue_depth=1)
    def decode():
        encoded, _ = fn.readers.file(files=[str(f) for f in files], random_shuffle=False)
        return fn.decoders.image(encoded, device=device, output_type=types.RGB)

    pipe = decode()
    pipe.build()
    (out,) = pipe.run()
    if device == "mixed":
        out = out.as_cpu()
    return [np.array(out.at(i)) for i in range(len(files))]


def check_dali_decode(args) -> dict:
    import numpy as np
    import torch

    files = foolbox_jpegs()
    if importlib.util.find_spec("nvidia.dali") is None:
        raise Skip("nvidia-dali is not installed")
    cpu = dali_decode(files, "cpu")
    if torch.cuda.is_available():
        other, what = dali_decode(files, "mixed"), "DALI mixed (nvJPEG) vs DALI CPU"
    else:
        from PIL import Image

        other, what = [np.asarray(Image.open(f).convert("RGB")) for f in files], "DALI CPU vs PIL (no CUDA)"
    diffs, bad = [], []
    for f, a, b in zip(files, other, cpu):
        if a.shape != b.shape:
            bad.append(f"{f.name}: shapes {a.shape} vs {b.shape}")
            continue
        diffs.append(float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()))
    worst = max(diffs) if diffs else float("nan")
    ok = not bad and worst <= DECODE_LIMIT
    detail = (f"{what} on {len(files)} JPEGs: mean |diff| per image {np.mean(diffs):.3f} (worst {worst:.3f}, "
              f"limit {DECODE_LIMIT})" + (f"; {'; '.join(bad)}" if bad else ""))
    return {"status": "pass" if ok else "fail", "detail": detail,
            "figures": {"compared": what, "mean_abs_diff": diffs, "worst": worst}}


# --------------------------------------------------------------------------------------- CRD's draws
def check_crd_draws_compiled(args) -> dict:
    import torch

    from pipeline.methods.draws import random_below

    if not torch.cuda.is_available():
        raise Skip(NO_CUDA + " (on CPU: tests/methods/test_crd_memory.py, marked slow)")

    def draw(counter, high):
        return random_below(high, (4, 4096), 11, 5, counter)
    counter = torch.tensor(3, device="cuda")
    high = torch.tensor([[37], [1_281_167], [2**40], [3]], device="cuda")
    eager, compiled = draw(counter, high), torch.compile(draw, backend="inductor")(counter, high)
    same = bool(torch.equal(eager, compiled))
    return {"status": "pass" if same else "fail",
            "detail": "inductor's draws equal the eager ones" if same else
            f"inductor's draws differ from the eager ones in {int((eager != compiled).sum())} of {eager.numel()}"}


# ------------------------------------------------------------------------------------- DDP over all GPUs
def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_on_every_gpu(script: str, script_args: list[str], out: Path, timeout: float) -> list[dict]:
    """`accelerate launch` of `script` with one process per visible GPU (NCCL); each rank's OUT/rank<r>.json."""
    n = gpu_count()
    launcher = [str(Path(sys.executable).with_name("accelerate")), "launch", "--num_machines", "1",
                "--num_processes", str(n), "--main_process_port", "0", "--mixed_precision", "no",
                "--dynamo_backend", "no", *(["--multi_gpu"] if n > 1 else [])]
    cmd = [*launcher, str(REPO / "bench" / script), str(out), *script_args]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=timeout)
    files = sorted(out.glob("rank*.json"))
    if proc.returncode != 0 or len(files) != n:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        raise RuntimeError(f"`{shlex.join(cmd)}` exited {proc.returncode} with {len(files)} of {n} rank records: "
                           + " / ".join(tail))
    return [json.loads(f.read_text()) for f in files]


DDP_FLAGS = ["--teacher.arch", "resnet18", "--student.arch", "resnet10t", "--teacher.checkpoint", "",
             "--data.image_size", "64", "--data.val_resize", "64", "--train.batch_size", "32", "--train.compile", "on",
             "--crd.nce_k", "4096", "--data.per_class", "100", "--train.dist_timeout_s", "300"]
_ddp: dict = {}


def ddp_records(args) -> list[dict]:
    """The DDP launch, made once for every ddp_step check and device_mapping."""
    if not gpu_count():
        raise Skip(NO_CUDA + " (NCCL, one process per GPU); on CPU, tests/test_gpu_check.py runs "
                             "bench/gpu_check_ddp.py in one process")
    if "records" not in _ddp:
        specs = QUICK_DDP_SPECS if args.quick else DDP_SPECS
        try:
            _ddp["records"] = launch_on_every_gpu("gpu_check_ddp.py", [";".join(specs), "--", *DDP_FLAGS],
                                                  Path(args.out) / "ddp", args.ddp_timeout)
        except Exception as e:  # noqa: BLE001 (every check of this launch reports it)
            _ddp["records"] = e
    if isinstance(_ddp["records"], Exception):
        raise _ddp["records"]
    return _ddp["records"]


def check_ddp_step(spec: str, args) -> dict:
    if args.quick and spec not in QUICK_DDP_SPECS:
        raise Skip("--quick")
    ranks = [r["specs"][spec] for r in ddp_records(args)]
    problems = []
    for rank, r in enumerate(ranks):
        if "error" in r:
            problems.append(f"rank {rank}: {r['error']}")
            continue
        if not r["finite"]:
            problems.append(f"rank {rank}: a non-finite loss")
        if r["skipped_step_changed"] or not r["skipped"]:
            problems.append(f"rank {rank}: the NaN step was {'not skipped' if not r['skipped'] else 'skipped'} "
                            f"but changed {r['skipped_step_changed'][:5]}")
    ok = [r for r in ranks if "error" not in r]
    detail = (f"{len(ranks)} GPUs; " + (f"warm-up {max(r['warmup_s'] for r in ok):.1f} s, steady "
              f"{max(r['steady_ms'] for r in ok):.1f} ms/step, {max(r['graph_breaks'] for r in ok)} graph breaks; "
              if ok else "") + ("; ".join(problems) if problems else
                                "no host sync, no recompile, the NaN step skipped with the state untouched"))
    return {"status": "fail" if problems else "pass", "detail": detail, "figures": {"ranks": ranks}}


def check_device_mapping(args) -> dict:
    records = ddp_records(args)
    mappings = [r["mapping"] for r in records if r["mapping"]]
    problems = []
    if len(mappings) != gpu_count():
        problems.append(f"{len(mappings)} rank records for {gpu_count()} GPUs")
    for m in mappings:
        want = f"cuda:{m['local_rank']}"
        if (m["device"], m["current_cuda_device"], m["parameters"], m["batch"]) != (want, m["local_rank"], [want], want):
            problems.append(f"rank {m['rank']} (LOCAL_RANK {m['env_local_rank']}): {m}")
    used = [(m["host"], m["device"]) for m in mappings]
    if len(set(used)) != len(used):
        problems.append(f"two ranks share a GPU: {sorted(used)}")
    return {"status": "fail" if problems else "pass",
            "detail": "; ".join(problems) or f"{len(mappings)} ranks, each on cuda:LOCAL_RANK with its parameters "
                                              "and batch, one per GPU", "figures": {"mappings": mappings}}


# ------------------------------------------------------------------------------------------ data checks
def datasets(args) -> dict:
    from bench.gpu_check_data import write_datasets

    return write_datasets(Path(args.out) / "data")


def check_skipped_step(args) -> dict:
    methods = QUICK_SKIP_METHODS if args.quick else SKIP_METHODS
    n = gpu_count()
    batch = max(2, min(8, 192 // (6 * max(n, 1))))  # 6 steps of the 192 train images over every GPU
    flags = ["--data.root", str(datasets(args)["plain"]), "--data.backend", "auto", "--data.image_size", "32",
             "--data.val_resize", "36", "--data.workers", "2", "--train.batch_size", str(batch),
             "--train.steps_per_epoch", "6", "--train.log_every", "3", "--train.compile", "off",
             "--teacher.arch", "resnet10t", "--teacher.checkpoint", random_teacher(args), "--student.arch", "resnet10t",
             "--crd.nce_k", "64", "--train.warmup_epochs", "0",
             "--train.output_dir", str(Path(args.out) / "skipped_step" / "runs")]
    if n:
        records = launch_on_every_gpu("skipped_step.py", ["--methods", ",".join(methods), "--", *flags],
                                      Path(args.out) / "skipped_step" / "records", args.ddp_timeout)
    else:  # one CPU process: what can run here
        from bench.skipped_step import check_skipped_steps

        records = [check_skipped_steps(flags, list(methods))]
    problems = []
    for rank in records:
        for method, r in rank.items():
            changed = {k: v[:3] for k, v in r.items() if k.startswith(("after_", "nonfinite_after_", "end_differs")) and v}
            if changed or r["skipped_steps"] != 2:
                problems.append(f"rank {r['rank']} {method}: {r['skipped_steps']} skipped, changed {changed}")
    return {"status": "fail" if problems else "pass",
            "detail": "; ".join(problems) or f"{', '.join(methods)} on {len(records)} process(es): the state bitwise "
                                              "unchanged by both skipped steps, the run as one without them",
            "figures": {"records": records}}


def random_teacher(args) -> str:
    """A resnet10t teacher file for the generated data (the check needs a teacher, not a good one)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from bench.gpu_check_data import CLASSES

    path = Path(args.out) / "data" / "teacher_resnet10t.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        save_file(timm.create_model("resnet10t", num_classes=CLASSES).state_dict(), str(path))
    return str(path)


def check_data(name: str, args) -> dict:
    import torch

    from bench.gpu_check_data import CHECKS as DATA_CHECKS
    from bench.gpu_check_data import CUDA_ONLY

    if importlib.util.find_spec("nvidia.dali") is None:
        raise Skip("nvidia-dali is not installed")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in CUDA_ONLY and device.type != "cuda":
        raise Skip(NO_CUDA + " (the memory the GPU pipelines hold)")
    try:
        detail, figures = DATA_CHECKS[name](datasets(args), device)
    except AssertionError as e:
        return {"status": "fail", "detail": str(e)}
    return {"status": "pass", "detail": detail + ("" if device.type == "cuda" else " (DALI CPU decoder: no CUDA)"),
            "figures": figures}


# ------------------------------------------------------------------------------------------- benchmarks
def check_benchmark(kind: str, args) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise Skip(NO_CUDA + " (a CPU throughput is not the GPU node's figure)")
    extra = ["--benchmark-batches", QUICK_SWEEP if args.quick else SWEEP] if kind == "sweep" else []
    cmd = [sys.executable, str(REPO / "launch" / "imagenet.py"), "--benchmark", "step" if kind == "sweep" else kind,
           *shlex.split(args.bench_args), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.bench_timeout)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 and "--benchmark" in text and ("unrecognized arguments" in text or "unknown" in text):
        raise Skip("launch/imagenet.py has no --benchmark flag in this checkout")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHMARK ")]
    if proc.returncode != 0 or not lines:
        return {"status": "fail", "detail": f"`{shlex.join(cmd)}` exited {proc.returncode} without a BENCHMARK line: "
                                            f"{text.strip().splitlines()[-1] if text.strip() else ''}",
                "figures": {"command": shlex.join(cmd), "tail": text[-3000:]}}
    result = json.loads(lines[-1][len("BENCHMARK "):])
    if kind == "sweep":
        per_batch = ", ".join(f"{r['batch_size']}: {r['images_per_s']:.0f}" if "images_per_s" in r
                              else f"{r['batch_size']}: {r['error']}" for r in result["sweep"])
        return {"status": "pass", "detail": f"images/s per batch {per_batch}; saturates at {result['saturates_at']}",
                "figures": {"command": shlex.join(cmd), "result": result}}
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and ("image" in k or "memory" in k)}
    return {"status": "pass", "detail": f"`{shlex.join(cmd)}`: {json.dumps(shown) if shown else json.dumps(result)[:300]}",
            "figures": {"command": shlex.join(cmd), "result": result}}


def check_peak_memory(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise Skip(NO_CUDA)
    peak = torch.cuda.max_memory_allocated() / 2**30
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    return {"status": "pass", "detail": f"{peak:.2f} GiB allocated at peak by this script's checks "
                                        f"(of {total:.0f} GiB); the benchmarks report their own",
            "figures": {"peak_gib": peak, "total_gib": total}}


# ----------------------------------------------------------------------------------------------- driver
def environment() -> dict:
    import torch

    env = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    else:
        from pipeline.device import cuda_unavailable_reason

        env["cuda_reason"] = cuda_unavailable_reason()
    for name in ("triton", "nvidia.dali", "timm", "accelerate"):
        try:
            env[name] = __import__(name, fromlist=["__version__"]).__version__
        except Exception as e:  # noqa: BLE001 (reported, not fatal)
            env[name] = f"unavailable ({type(e).__name__})"
    return env


def run_check(name: str, args) -> dict:
    start = time.perf_counter()
    try:
        if name == "kernels":
            result = check_kernels(args)
        elif name.startswith("compile_step:"):
            result = check_compile_step(name.split(":", 1)[1], args)
        elif name == "crd_draws_compiled":
            result = check_crd_draws_compiled(args)
        elif name.startswith("ddp_step:"):
            result = check_ddp_step(name.split(":", 1)[1], args)
        elif name == "device_mapping":
            result = check_device_mapping(args)
        elif name == "skipped_step":
            result = check_skipped_step(args)
        elif name == "dali_decode":
            result = check_dali_decode(args)
        elif name.startswith("dali_"):
            result = check_data(name, args)
        elif name.startswith("benchmark_"):
            result = check_benchmark(name[len("benchmark_"):], args)
        else:
            result = check_peak_memory(args)
    except Skip as e:
        result = {"status": "skip", "detail": str(e)}
    except Exception as e:  # noqa: BLE001 (a crashing check is a failed check, the others still run)
        result = {"status": "fail", "detail": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                  "figures": {"traceback": traceback.format_exc()[-4000:]}}
    return {"name": name, **result, "seconds": round(time.perf_counter() - start, 1)}


def write_report(out: Path, env: dict, results: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = {s: [r["name"] for r in results if r["status"] == s] for s in ("pass", "fail", "skip")}
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "summary": summary, "checks": results},
                                                   indent=1, default=str))
    lines = ["# GPU check", "", ", ".join(f"{k}: {v}" for k, v in env.items()), "",
             markdown_table(["check", "status", "s", "detail"],
                            [[r["name"], r["status"].upper(), r["seconds"], r["detail"].replace("|", "/")] for r in results])]
    kernel_rows = next((r.get("figures", {}).get("cases") for r in results if r["name"] == "kernels"), None)
    if kernel_rows:
        lines += ["", "## Kernels against the float64 reference", "",
                  markdown_table(["loss", "sizes", "dtypes", "loss rel err", "max grad rel err", "tol", "ok"],
                                 [[r["loss"], r["sizes"], r["dtypes"], r["loss_err"], r["max_grad_err"], r["tol"], r["ok"]]
                                  for r in kernel_rows])]
    if summary["skip"]:
        lines += ["", "## Skipped", ""] + [f"- {r['name']}: {r['detail']}" for r in results if r["status"] == "skip"]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--skip", default="", help=f"comma-separated checks not to run ({', '.join(CHECKS)})")
    parser.add_argument("--student", default="resnet10t", help="compile_step's student (its graph is compiled)")
    parser.add_argument("--teacher", default="resnet18", help="compile_step's teacher (run eagerly, frozen)")
    parser.add_argument("--image-size", type=int, default=64, help="compile_step's images on CUDA")
    parser.add_argument("--batch", type=int, default=32, help="compile_step's batch per view on CUDA")
    parser.add_argument("--cpu-compile", action="store_true", help="without CUDA, run compile_step anyway (eager backend)")
    parser.add_argument("--bench-args", default=DEFAULT_BENCH_ARGS, help="arguments for launch/imagenet.py --benchmark")
    parser.add_argument("--bench-timeout", type=float, default=240, help="seconds per --benchmark subprocess")
    parser.add_argument("--ddp-timeout", type=float, default=420, help="seconds per launch over every GPU")
    parser.add_argument("--quick", action="store_true",
                        help="fewer methods and batches (the 5-minute variant; see the docstring)")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(CHECKS)
    if unknown:
        parser.error(f"--skip: unknown check(s) {', '.join(sorted(unknown))} (choices: {', '.join(CHECKS)})")
    os.chdir(REPO)
    args.out = str(Path(args.out).resolve())
    _ddp.clear()
    env = environment()
    results = []
    for name in CHECKS:
        if name in skip:
            results.append({"name": name, "status": "skip", "detail": "--skip", "seconds": 0.0})
            continue
        results.append(run_check(name, args))
        r = results[-1]
        print(f"[gpu_check] {r['name']}: {r['status'].upper()} ({r['seconds']} s) {r['detail']}", flush=True)
    write_report(Path(args.out), env, results)
    failed = [r["name"] for r in results if r["status"] == "fail"]
    skipped = [r["name"] for r in results if r["status"] == "skip"]
    print(f"[gpu_check] report: {Path(args.out) / 'gpu_check.md'}; failed: {', '.join(failed) or 'none'}; "
          f"skipped: {', '.join(skipped) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
