"""One training step of a method under DDP (accelerate, as the Trainer wraps it), or of the same method in one
process on the concatenated batch: `probe.py OUT` under `accelerate launch` writes OUT/<method>-rank<r>.pt
(each rank's loss terms and, after DDP's average, every gradient); tests/contracts/test_two_vs_one_process.py
computes the one-process step with `one_step` and compares by value.

The networks are LayerNorm ones (timm's test_vit student, test_convnext teacher-sized SL teachers): their
outputs do not depend on which other images share the batch, so the 2-process step and the 1-process step
on the concatenated batch must agree exactly, up to float rounding.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from pipeline.config import Config, apply  # noqa: E402
from pipeline.distiller import Distiller  # noqa: E402
from pipeline.methods import MethodContext, NetOutput, build_methods  # noqa: E402
from pipeline.models import create_network  # noqa: E402

WORLD, B, CLASSES, IMAGE, TEACHER_DIM = 2, 4, 5, 32, 40
METHODS = {"icd": {"icd": {"negatives": "global", "alpha": 0.7, "dim": 16}},
           "slkd": {"slkd": {"alpha": 0.3, "rho": 0.25, "lam": 1.5, "eta": 2.0, "detach": False}}}


def build(method: str) -> Distiller:
    cfg = Config(method=method)
    apply(cfg, {"student": {"arch": "test_vit"}, "teacher": {"arch": "test_convnext"}, **METHODS[method]}, "probe")
    torch.manual_seed(0)

    def network(arch):
        return create_network(type(cfg.student)(arch=arch), CLASSES, cfg.data.mean, cfg.data.std)

    student = network(cfg.student.arch)
    ctx = MethodContext(cfg=cfg, student_dim=student.feature_dim, teacher_dim=TEACHER_DIM, num_classes=CLASSES,
                        num_train_samples=64, build_teacher_like=lambda: network(cfg.teacher.arch))
    return Distiller(student, build_methods(method, ctx), cfg.train.ce_weight)


def global_batch() -> dict:
    gen = torch.Generator().manual_seed(7)
    n = WORLD * B
    return {"images": torch.randn(n, 3, IMAGE, IMAGE, generator=gen),
            "labels": torch.randint(CLASSES, (n,), generator=gen),
            "t_logits": torch.randn(n, CLASSES, generator=gen) * 3,
            "t_features": torch.randn(n, TEACHER_DIM, generator=gen).relu()}


def one_step(model, module: Distiller, rows: slice, backward) -> dict:
    """Loss terms of one forward on `rows` of the global batch, then the backward; the module's gradients."""
    batch = global_batch()
    teacher = NetOutput(batch["t_logits"][rows], batch["t_features"][rows])
    terms = model(batch["images"][rows], batch["labels"][rows], teacher, 1)
    backward(sum(terms.values()))
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    return {"terms": {k: v.detach() for k, v in terms.items()}, "grads": grads}


def main():
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    assert accelerator.num_processes == WORLD
    rank = accelerator.process_index
    for method in METHODS:
        module = build(method)
        model = accelerator.prepare(module)
        record = one_step(model, module, slice(rank * B, (rank + 1) * B), accelerator.backward)
        torch.save(record, out / f"{method}-rank{rank}.pt")


if __name__ == "__main__":
    main()
