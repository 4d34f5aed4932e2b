"""Each loss term's value and gradient norm on the student, per method, at the start and after some training.

    .venv/bin/python bench/loss_terms.py [--methods kd,icd+kd,dccd,slkd,crd+kd] [--steps 15] [FLAGS...]

For a fixed batch of the demo (configs/demo.yaml, its cached teacher, trained first if missing), every
term of every method (already weighted, as the trainer sums them) is differentiated on its own with
respect to (a) the student's pooled features (the point every term passes through: CE and the logit
terms via the classifier, ICD/CCD/CRD via their heads) and (b) the student's classifier weight. Printed
at step 0 and again after `--steps` training steps of that method, as |grad| and as a ratio to CE's, so
a term that is negligible or that swamps cross-entropy shows at once. Extra flags are config flags.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_demo_teacher, load_average, markdown_table  # noqa: E402

METHODS = "kd,icd+kd,dccd,slkd,crd+kd"


def batch_images(batch: dict):
    """The loader's batch as one (views * B, ...) tensor (new contract: batch["images"]; old: a list of views)."""
    import torch

    return batch["images"] if "images" in batch else torch.cat(batch["views"])


def term_gradients(trainer, batch) -> dict[str, tuple[float, float, float]]:
    """{term: (value, |d term / d features|, |d term / d classifier weight|)} on one batch, no update."""
    import torch
    import torch.nn.functional as F

    from pipeline.methods import NetOutput, Outputs

    distiller = trainer.accelerator.unwrap_model(trainer.model)
    images = batch_images(batch)
    labels = batch["labels"].repeat(trainer.views)
    teacher = None
    if trainer.teacher is not None:
        with torch.no_grad():
            t_logits, t_features = trainer.teacher(images)
        teacher = NetOutput(t_logits.float(), t_features.float())
    logits, features = distiller.student(images)
    out = Outputs(images=images, labels=labels, student=NetOutput(logits, features), teacher=teacher,
                  views=trainer.views, index=batch.get("index"))
    terms = {"ce": distiller.ce_weight * F.cross_entropy(logits.float(), labels)} if distiller.ce_weight else {}
    for method in distiller.methods:
        terms.update(method(out))
    classifier = distiller.student.model.get_classifier().weight
    result = {}
    for name, value in terms.items():
        g_feat, g_fc = torch.autograd.grad(value, (features, classifier), retain_graph=True, allow_unused=True)
        norm = (lambda g: 0.0 if g is None else g.norm().item())
        result[name] = (value.item(), norm(g_feat), norm(g_fc))
    distiller.zero_grad(set_to_none=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--steps", type=int, default=15, help="training steps between the two measurements")
    args, config_argv = parser.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    os.chdir(Path(__file__).resolve().parents[1])
    import tempfile

    from pipeline.config import parse_args
    from pipeline.trainer import Trainer

    if "--teacher.checkpoint" not in config_argv:
        ensure_demo_teacher()
    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for method in args.methods.split(","):
            cfg, _ = parse_args(config_argv + ["--method", method, "--train.output_dir", out_dir, "--train.name",
                                               method.replace("+", "_"), "--train.baseline", "false"])
            trainer = Trainer(cfg)
            trainer.train_loader.set_epoch(0)
            batches = iter(trainer.train_loader)
            probe = next(batches)
            trainer.model.train()
            for step in (0, args.steps):
                if step:
                    done = 0
                    while done < step:  # train, drawing fresh batches (a new epoch when one runs out)
                        for batch in batches:
                            trainer.train_step(batch)
                            done += 1
                            if done == step:
                                break
                        else:
                            trainer.train_loader.set_epoch(1)
                            batches = iter(trainer.train_loader)
                grads = term_gradients(trainer, probe)
                ce_feat = grads.get("ce", (0, 0, 0))[1] or float("nan")
                for term, (value, g_feat, g_fc) in grads.items():
                    rows.append([method, step, term, f"{value:.4g}", f"{g_feat:.3g}", f"{g_feat / ce_feat:.2f}",
                                 f"{g_fc:.3g}"])
            print(f"done {method}", file=sys.stderr, flush=True)
            del trainer
    print(f"\nloss terms (already weighted) on one fixed batch of {cfg.train.batch_size} images; |grad| w.r.t. the "
          f"student's pooled features and classifier weight; load average {load_average():.1f}")
    print(markdown_table(["method", "after step", "term", "value", "|d/d features|", "x CE's", "|d/d fc.weight|"],
                         rows))


if __name__ == "__main__":
    main()
