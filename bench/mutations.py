"""Mutation score of the test suite: realistic one-line bugs, planted one at a time in a scratch copy.

Each mutant names a file, a snippet that must occur exactly once in it, its replacement, the tests that
should catch it and what the bug is. For each mutant the script applies it to a scratch copy of the
repository (never the working tree), runs only its tests there (`pytest -x -q`, PYTHONPATH = the copy,
a timeout), restores the file, and records killed (a test failed), survived (all passed) or timeout.
First it runs every listed test on the unmutated copy: a test that fails there would "kill" mutants
for nothing, so the run stops.

A mutant whose snippet is not found exactly once is STALE: an error (exit status 1), not a pass; update
the snippet after the code it targets has changed. EQUIVALENT lists mutants that cannot change any
result, each with the reason; they are checked for staleness but excluded from the score.

    .venv/bin/python bench/mutations.py             # every mutant, one at a time (~15-20 min on 2 idle cores)
    .venv/bin/python bench/mutations.py --jobs 2    # two scratch copies in parallel
    .venv/bin/python bench/mutations.py --only icd_bwd_alpha_hardcoded --only kd_grad_scale_hardcoded_T
    .venv/bin/python bench/mutations.py --list
    .venv/bin/python bench/mutations.py --auto [--module GLOB ...] [--jobs 2]   # automatic mutants: bench/mutation_auto.py
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load_average, markdown_table  # noqa: E402


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest node ids (relative to the root) that should catch it
    description: str
    equivalent: str = ""  # why it cannot change any result (then it is not run nor scored)


K, M, T = "tests/kernels/", "tests/methods/", "tests/"
KD_T = K + "test_kd.py::test_kd_non_default_temperature"
DKD_T = K + "test_dkd.py::test_dkd_non_default_temperature"
ICD_HP = K + "test_icd.py::test_icd_non_default_alpha_and_max_scale"
CCD_HP = K + "test_ccd.py::test_ccd_non_default_theta_and_eps"
TERMS = M + "test_method_terms.py::"
CRD = M + "test_crd_memory.py::"
ARITH = T + "test_trainer_arithmetic.py::"
SHARD = T + "test_sharding.py::"
CKPT = T + "test_checkpoint_files.py::"

MUTANTS = [
    # ---- kernels/kd.py
    Mutant("kd_grad_scale_hardcoded_T", "kernels/kd.py",
           "C, 1.0 / temperature, temperature**2 / B, temperature / B,",
           "C, 1.0 / temperature, temperature**2 / B, 4.0 / B,",
           (KD_T,), "KD kernel: gradient scale uses the default T = 4 instead of the argument"),
    Mutant("kd_loss_scale_T_not_T2", "kernels/kd.py",
           "C, 1.0 / temperature, temperature**2 / B, temperature / B,",
           "C, 1.0 / temperature, temperature / B, temperature / B,",
           (KD_T,), "KD kernel: loss scaled by T instead of T^2"),
    Mutant("kd_student_grad_sign", "kernels/kd.py",
           "return tl.exp(log_p) - q, q * (log_q - log_p - kl)",
           "return q - tl.exp(log_p), q * (log_q - log_p - kl)",
           (KD_T,), "KD kernel backward: d/ds = q - p (sign flipped)"),
    Mutant("kd_teacher_grad_drops_kl", "kernels/kd.py",
           "return tl.exp(log_p) - q, q * (log_q - log_p - kl)",
           "return tl.exp(log_p) - q, q * (log_q - log_p)",
           (K + "test_kd.py::test_kd_teacher_grad_and_grad_output",), "KD kernel backward: d/dt misses the -KL term"),
    Mutant("kd_stream_no_rescale", "kernels/kd.py",
           "z_a = z_a * tl.exp(m_a - new_m_a) + tl.sum(tl.exp(a - new_m_a), 0)",
           "z_a = z_a + tl.sum(tl.exp(a - new_m_a), 0)",
           (K + "test_kd.py::test_kd_streaming_rows",), "KD kernel, streamed rows: running sum not rescaled when the max grows"),
    Mutant("kd_backward_ignores_grad_output", "kernels/kd.py",
           "return (gs * grad_loss if ctx.grad_s else None,",
           "return (gs if ctx.grad_s else None,",
           (K + "test_kd.py::test_kd_teacher_grad_and_grad_output",), "KD autograd: student gradient not scaled by grad_output"),
    # ---- kernels/dkd.py
    Mutant("dkd_grad_scale_hardcoded_T", "kernels/dkd.py",
           "C, 1.0 / temperature, temperature**2 / (2 * B), temperature / (2 * B),",
           "C, 1.0 / temperature, temperature**2 / (2 * B), 4.0 / (2 * B),",
           (DKD_T,), "DKD kernel: gradient scale uses the default T = 4"),
    Mutant("dkd_student_grad_directions_added", "kernels/dkd.py",
           "tl.store(gs_ptr + offs, (grad_scale * (da_pos - da_neg)).to(gs_ptr.dtype.element_ty), mask=mask)",
           "tl.store(gs_ptr + offs, (grad_scale * (da_pos + da_neg)).to(gs_ptr.dtype.element_ty), mask=mask)",
           (DKD_T,), "DKD kernel backward: the '-' direction's gradient added instead of subtracted"),
    Mutant("dkd_view_b_grad_sign", "kernels/dkd.py",
           "return g_s, None if g_s is None else -g_s, g_t,",
           "return g_s, None if g_s is None else g_s, g_t,",
           (DKD_T,), "DKD autograd: view b gets +g instead of -g"),
    Mutant("dkd_teacher_grad_one_direction", "kernels/dkd.py",
           "tl.store(gt_ptr + offs, (grad_scale * (db_pos - db_neg)).to(gt_ptr.dtype.element_ty), mask=mask)",
           "tl.store(gt_ptr + offs, (grad_scale * db_pos).to(gt_ptr.dtype.element_ty), mask=mask)",
           (K + "test_dkd.py::test_dkd_teacher_grad_and_grad_output",), "DKD kernel backward: teacher gradient of one direction only"),
    # ---- kernels/icd.py
    Mutant("icd_fwd_alpha_hardcoded", "kernels/icd.py",
           "loss = (row_lse - (s * diag + b)) + alpha * (t + row_lse - col_lse)",
           "loss = (row_lse - (s * diag + b)) + 0.5 * (t + row_lse - col_lse)",
           (ICD_HP,), "ICD forward: invariance weight hard-coded to the default 0.5"),
    Mutant("icd_bwd_alpha_hardcoded", "kernels/icd.py",
           "g = r - eye + alpha * (w * (s * (sim - sim_t) - t_c[None, :]) + r - w_t)",
           "g = r - eye + 0.5 * (w * (s * (sim - sim_t) - t_c[None, :]) + r - w_t)",
           (ICD_HP,), "ICD backward: invariance weight hard-coded to 0.5"),
    Mutant("icd_clamp_hardcoded", "kernels/icd.py",
           "unclamped = raw <= max_scale",
           "unclamped = raw <= 10.0",
           (ICD_HP,), "ICD: the clamp test uses the default max_scale 10"),
    Mutant("icd_grad_through_clamp", "kernels/icd.py",
           "return tl.where(unclamped, raw, max_scale), tl.where(unclamped, raw, 0.0)",
           "return tl.where(unclamped, raw, max_scale), raw",
           (ICD_HP,), "ICD backward: log_scale gets a gradient above the clamp"),
    Mutant("icd_padded_rows_in_softmax", "kernels/icd.py",
           'logits = tl.where(a_ok[:, None], s * sim + b, float("-inf"))  # L_ac',
           "logits = s * sim + b  # L_ac",
           (ICD_HP,), "ICD forward: padded rows of a block enter the column softmax"),
    Mutant("icd_teacher_grad_untransposed", "kernels/icd.py",
           'acc = tl.dot(tl.trans(g), zs_a, acc, input_precision="ieee")',
           'acc = tl.dot(g, zs_a, acc, input_precision="ieee")',
           (ICD_HP,), "ICD backward: dz_t uses G instead of G^T"),
    Mutant("icd_grads_swapped", "kernels/icd.py",
           "return grads[0], grads[1], dlog_scale, torch.zeros_like(bias)",
           "return grads[1], grads[0], dlog_scale, torch.zeros_like(bias)",
           (ICD_HP,), "ICD backward: student and teacher gradients returned in the wrong order"),
    # ---- kernels/ccd.py
    Mutant("ccd_fwd_theta_hardcoded", "kernels/ccd.py",
           "off_weight = theta / (d - 1) if d > 1 else 0.0",
           "off_weight = 2.0 / (d - 1) if d > 1 else 0.0",
           (CCD_HP,), "CCD forward: off-diagonal weight uses the default theta 2"),
    Mutant("ccd_bwd_missing_factor_2", "kernels/ccd.py",
           "off_weight2 = 2.0 * theta / (d - 1) if d > 1 else 0.0",
           "off_weight2 = theta / (d - 1) if d > 1 else 0.0",
           (CCD_HP,), "CCD backward: d(Corr^2)/dCorr without its factor 2"),
    Mutant("ccd_eps_hardcoded", "kernels/ccd.py",
           "return mean, 1.0 / tl.sqrt_rn(sq / B + eps)",
           "return mean, 1.0 / tl.sqrt_rn(sq / B + 1e-5)",
           (CCD_HP,), "CCD: standardisation eps hard-coded to the default"),
    Mutant("ccd_unbiased_variance", "kernels/ccd.py",
           "return mean, 1.0 / tl.sqrt_rn(sq / B + eps)",
           "return mean, 1.0 / tl.sqrt_rn(sq / (B - 1) + eps)",
           (CCD_HP,), "CCD: unbiased variance instead of BatchNorm's biased one"),
    Mutant("ccd_bwd_drops_projection", "kernels/ccd.py",
           "dx = rstd_i[None, :] * (h - c_own * tl.sum(gc, axis=1)[None, :]) / B",
           "dx = rstd_i[None, :] * h / B",
           (CCD_HP,), "CCD backward: standardisation's variance term dropped"),
    Mutant("ccd_diag_grad_sign", "kernels/ccd.py",
           "grad = g * tl.where(on_diag, -2.0 * (1.0 - corr), off_weight2 * corr)",
           "grad = g * tl.where(on_diag, 2.0 * (1.0 - corr), off_weight2 * corr)",
           (CCD_HP,), "CCD backward: on-diagonal gradient sign flipped"),
    # ---- kernels/reference.py (what every method calls on CPU)
    Mutant("ref_kd_T_not_T2", "kernels/reference.py",
           "return kl.mean() * temperature**2",
           "return kl.mean() * temperature",
           (M + "test_losses.py::test_kd",), "reference KD scaled by T instead of T^2"),
    Mutant("ref_icd_kl_reversed", "kernels/reference.py",
           "invariance = (log_p_cols.exp() * (log_p_cols - log_p_rows)).sum(dim=1).mean()",
           "invariance = (log_p_rows.exp() * (log_p_rows - log_p_cols)).sum(dim=1).mean()",
           (M + "test_losses.py::test_icd",), "reference ICD: invariance KL in the wrong direction"),
    Mutant("ref_ccd_unbiased_variance", "kernels/reference.py",
           "var = (x - mean).square().mean(dim=0, keepdim=True)",
           "var = x.var(dim=0, keepdim=True)",
           (M + "test_losses.py::test_ccd",), "reference CCD: unbiased variance"),
    # ---- methods
    Mutant("kd_method_ignores_temperature", "pipeline/methods/kd.py",
           "self.temperature = ctx.cfg.kd.temperature",
           "self.temperature = 4.0",
           (TERMS + "test_kd_and_ce_average_over_both_views",), "KD method ignores kd.temperature"),
    Mutant("dkd_method_teacher_views_swapped", "pipeline/methods/dkd.py",
           "t_a, t_b = out.per_view(out.teacher.logits_at(self.temperature))",
           "t_b, t_a = out.per_view(out.teacher.logits_at(self.temperature))",
           (TERMS + "test_dkd_is_kd_on_view_differences",), "DKD method: teacher difference b - a against student a - b"),
    Mutant("ccd_method_same_view_pairs", "pipeline/methods/ccd.py",
           "ccd = (kernels.ccd_loss(s_a, t_b, self.theta, self.eps)",
           "ccd = (kernels.ccd_loss(s_a, t_a, self.theta, self.eps)",
           (TERMS + "test_ccd_pairs_each_student_view_with_the_other_teacher_view",), "CCD method pairs view a with view a"),
    Mutant("ccd_method_drops_eps", "pipeline/methods/ccd.py",
           "+ kernels.ccd_loss(s_b, t_a, self.theta, self.eps))",
           "+ kernels.ccd_loss(s_b, t_a, self.theta))",
           (TERMS + "test_ccd_pairs_each_student_view_with_the_other_teacher_view",), "CCD method: ccd.eps not passed"),
    Mutant("icd_method_teacher_not_detached", "pipeline/methods/icd.py",
           "z_t = self.embed(self.head_t, out.teacher.features.detach())",
           "z_t = self.embed(self.head_t, out.teacher.features)",
           (TERMS + "test_icd_averages_views_and_keeps_the_teacher_features_out_of_the_graph",),
           "ICD method: teacher features not detached"),
    Mutant("icd_method_drops_alpha_and_clamp", "pipeline/methods/icd.py",
           "losses.append(kernels.icd_loss(view_s, view_t, self.log_scale, self.bias, self.alpha, self.max_scale))",
           "losses.append(kernels.icd_loss(view_s, view_t, self.log_scale, self.bias))",
           (TERMS + "test_icd_averages_views_and_keeps_the_teacher_features_out_of_the_graph",),
           "ICD method: icd.alpha and icd.max_scale not passed to the loss"),
    Mutant("slkd_rho_swapped", "pipeline/methods/slkd.py",
           "y_sl = self.rho * y_sl1.float() + (1 - self.rho) * y_sl2.float()",
           "y_sl = (1 - self.rho) * y_sl1.float() + self.rho * y_sl2.float()",
           (TERMS + "test_slkd_student_loss_follows_eq7",), "SLKD: rho weighs the wrong SL teacher"),
    Mutant("slkd_teacher_weight_alpha", "pipeline/methods/slkd.py",
           "self.teacher_weight = c.lam * (1 - c.alpha)",
           "self.teacher_weight = c.lam * c.alpha",
           (TERMS + "test_slkd_student_loss_follows_eq7",), "SLKD: teacher KD weighted lambda * alpha instead of lambda * (1 - alpha)"),
    Mutant("slkd_detach_inverted", "pipeline/methods/slkd.py",
           "if self.detach:",
           "if not self.detach:",
           (TERMS + "test_slkd_detach_decides_whether_the_student_loss_trains_the_sl_teachers",),
           "SLKD: slkd.detach inverted"),
    Mutant("crd_momentum_swapped", "pipeline/methods/crd.py",
           "F.normalize(rows * self.momentum + v * (1 - self.momentum), dim=1)",
           "F.normalize(rows * (1 - self.momentum) + v * self.momentum, dim=1)",
           (CRD + "test_bank_update_rule_worked_by_hand",), "CRD memory: momentum weighs the new embedding"),
    Mutant("crd_bank_not_normalised", "pipeline/methods/crd.py",
           "bank.index_copy_(0, index, F.normalize(rows * self.momentum + v * (1 - self.momentum), dim=1))",
           "bank.index_copy_(0, index, rows * self.momentum + v * (1 - self.momentum))",
           (CRD + "test_bank_update_rule_worked_by_hand",), "CRD memory: updated rows not re-normalised"),
    Mutant("crd_nce_counts_positive_as_noise", "pipeline/methods/crd.py",
           "m_pn = (p.shape[1] - 1) / num_data  # K * Pn",
           "m_pn = p.shape[1] / num_data  # K * Pn",
           (CRD + "test_nce_loss_matches_the_paper",), "CRD NCE: K counted with the positive (K + 1)"),
    Mutant("crd_z_reestimated_every_batch", "pipeline/methods/crd.py",
           "self.z.copy_(torch.where(self.z < 0, estimate, self.z))",
           "self.z.copy_(estimate)",
           (CRD + "test_z_is_fixed_after_the_first_batch",), "CRD: Z re-estimated every batch instead of fixed"),
    Mutant("ce_weight_ignored", "pipeline/distiller.py",
           'terms["ce"] = self.ce_weight * F.cross_entropy(logits.float(), labels)',
           'terms["ce"] = F.cross_entropy(logits.float(), labels)',
           (TERMS + "test_kd_and_ce_average_over_both_views",), "Distiller: train.ce_weight not applied"),
    # ---- trainer
    Mutant("lr_scaled_by_per_process_batch", "pipeline/batch.py",
           "train.lr * global_batch / 256,",
           "train.lr * per_process / 256,",
           (ARITH + "test_optimizer_lr_per_256_images_and_weight_decay_groups",), "lr scaled by the per-process batch"),
    Mutant("lr_not_scaled", "pipeline/batch.py",
           "train.lr * global_batch / 256,",
           "train.lr,",
           (ARITH + "test_optimizer_lr_per_256_images_and_weight_decay_groups",), "lr not scaled per 256 images"),
    Mutant("eval_counts_padding_top1", "pipeline/metrics.py",
           "out = torch.stack([(hit[:, 0] & valid).sum(),",
           "out = torch.stack([hit[:, 0].sum(),",
           (ARITH + "test_evaluate_counts_top1_top5_exactly_over_padded_shards",), "evaluate: padded rows counted in top-1"),
    Mutant("eval_counts_padding_seen", "pipeline/trainer.py",
           "seen += valid.sum()",
           "seen += len(valid)",
           (ARITH + "test_evaluate_counts_top1_top5_exactly_over_padded_shards",), "evaluate: padded rows in the denominator"),
    Mutant("eval_top4", "pipeline/metrics.py",
           "top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices",
           "top5 = logits.topk(min(4, logits.shape[1]), dim=1).indices",
           (ARITH + "test_evaluate_counts_top1_top5_exactly_over_padded_shards",), "evaluate: top-5 is really top-4"),
    Mutant("eval_seen_not_reduced", "pipeline/trainer.py",
           'seen = self.accelerator.reduce(seen, "sum")',
           "seen = seen",
           (ARITH + "test_evaluate_counts_top1_top5_exactly_over_padded_shards",), "evaluate: image count not summed over processes"),
    Mutant("eval_teacher_every_epoch", "pipeline/trainer.py",
           'if self.teacher is not None and not any(h.get("teacher_top1") is not None for h in self.history):',
           "if self.teacher is not None:",
           (ARITH + "test_evaluate_runs_the_frozen_teacher_once_and_carries_its_result",),
           "evaluate: the frozen teacher re-evaluated every epoch"),
    Mutant("zero_grad_before_step", "pipeline/trainer.py",
           "        self.optimizer.step()\n        self.optimizer.zero_grad(set_to_none=True)",
           "        self.optimizer.zero_grad(set_to_none=True)\n        self.optimizer.step()",
           (ARITH + "test_a_training_step_applies_one_sgd_update_with_the_scaled_lr",),
           "train_step: gradients zeroed before the optimizer steps"),
    Mutant("resume_restarts_epoch", "pipeline/run_checkpoints.py",
           'progress = {k: state[k] for k in PROGRESS}',
           'progress = {**{k: state[k] for k in PROGRESS}, "step_in_epoch": 0}',
           (ARITH + "test_resume_restores_the_newest_loadable_checkpoint",), "resume: replays the epoch from its first step"),
    Mutant("resume_no_fallback", "pipeline/run_checkpoints.py",
           'if resume != "auto" or path == candidates[-1]:',
           "if True:",
           (ARITH + "test_resume_restores_the_newest_loadable_checkpoint",), "resume auto: no fallback to an older checkpoint"),
    Mutant("resume_forgets_last_saved", "pipeline/run_checkpoints.py",
           'self.last_saved = (progress["global_step"], progress["epoch"], progress["step_in_epoch"])\n        log.info(',
           "self.last_saved = None\n        log.info(",
           (ARITH + "test_resume_restores_the_newest_loadable_checkpoint",),
           "resume: forgets which state is already on disk (re-saves it at once)"),
    Mutant("save_epoch_done_same_epoch", "pipeline/trainer.py",
           "(self.epoch + 1, 0) if epoch_done",
           "(self.epoch, 0) if epoch_done",
           (ARITH + "test_save_at_the_end_of_an_epoch_points_to_the_next_epoch",),
           "save at the end of an epoch: resume would repeat the epoch"),
    # ---- data plans
    Mutant("train_same_order_every_epoch", "pipeline/data/sharding.py",
           "perm = np.random.default_rng([seed, epoch]).permutation(num_samples)",
           "perm = np.random.default_rng(seed).permutation(num_samples)",
           (SHARD + "test_train_plan_is_a_new_order_each_epoch_and_the_same_on_a_rerun",), "train plan ignores the epoch"),
    Mutant("train_shards_overlap", "pipeline/data/sharding.py",
           "mine = perm[rank::world][: steps * batch_size]",
           "mine = perm[rank:][: steps * batch_size]",
           (SHARD + "test_train_plan_covers_each_sample_at_most_once_with_equal_steps",), "train shards overlap across ranks"),
    Mutant("train_keeps_ragged_step", "pipeline/data/sharding.py",
           "return (num_samples // world) // batch_size",
           "return -(-(num_samples // world) // batch_size)",
           (SHARD + "test_train_plan_covers_each_sample_at_most_once_with_equal_steps",), "train plan keeps a ragged last step"),
    Mutant("val_per_rank_floor", "pipeline/data/sharding.py",
           "per_rank = -(-num_samples // world)",
           "per_rank = num_samples // world",
           (SHARD + "test_val_plan_counts_every_sample_exactly_once",), "val plan drops the remainder samples"),
    Mutant("val_valid_off_by_one", "pipeline/data/sharding.py",
           "valid = idx < num_samples",
           "valid = idx <= num_samples",
           (SHARD + "test_val_plan_worked_by_hand",), "val plan marks one padded row valid"),
    Mutant("torch_loader_ignores_epoch", "pipeline/data/planned.py",
           "                                  self.seed, self.epoch)",
           "                                  self.seed, 0)",
           (SHARD + "test_torch_loader_train_epochs_cover_every_sample_once_across_ranks",),
           "torchvision loader: the same order every epoch"),
    Mutant("torch_loader_resume_replays", "pipeline/data/torch_loader.py",
           "index = self.loader.epoch_plan()[0][self.loader.start_step:]",
           "index = self.loader.epoch_plan()[0]",
           (SHARD + "test_torch_loader_train_epochs_cover_every_sample_once_across_ranks",),
           "torchvision loader: a resumed epoch starts from its first step again"),
    # ---- checkpoints
    Mutant("manifest_sizes_ignored", "pipeline/checkpoint.py",
           "return all((path / name).stat().st_size == size for name, size in sizes.items())",
           "return all((path / name).exists() for name in sizes)",
           (CKPT + "test_is_complete_rejects_every_damage",), "is_complete: truncated files pass"),
    Mutant("prune_keeps_oldest", "pipeline/checkpoint.py",
           "doomed = complete[:-keep] if keep > 0 else []",
           "doomed = complete[keep:] if keep > 0 else []",
           (CKPT + "test_newest_complete_first_and_pruning_keeps_the_last_k_complete",), "prune keeps the oldest K"),
    Mutant("debris_counted_as_checkpoint", "pipeline/checkpoint.py",
           'return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))',
           "return sorted(p for p in root.iterdir() if p.is_dir())",
           (CKPT + "test_debris_is_not_a_checkpoint_and_the_next_save_removes_it",), "temporary folders listed as checkpoints"),
    Mutant("oldest_checkpoint_first", "pipeline/checkpoint.py",
           "for path in reversed(list_checkpoints(run_dir)):",
           "for path in list_checkpoints(run_dir):",
           (CKPT + "test_newest_complete_first_and_pruning_keeps_the_last_k_complete",), "resume picks the oldest checkpoint"),
    Mutant("unpadded_step_names", "pipeline/checkpoint.py",
           'return run_dir / "checkpoints" / f"step-{global_step:09d}"',
           'return run_dir / "checkpoints" / f"step-{global_step}"',
           (CKPT + "test_newest_complete_first_and_pruning_keeps_the_last_k_complete",),
           "step folders not zero-padded: step-100 sorts before step-8"),
    Mutant("save_copies_instead_of_rename", "pipeline/checkpoint.py",
           "            _replace_dir(tmp, final)",
           "            shutil.copytree(tmp, final, dirs_exist_ok=True)",
           (CKPT + "test_save_writes_a_complete_checkpoint_with_a_size_manifest",),
           "save: copies the finished folder instead of renaming it (not atomic, leaves the temporary folder)"),
    # ---- equivalent: listed, checked for staleness, excluded from the score
    Mutant("train_steps_single_division", "pipeline/data/sharding.py",
           "return (num_samples // world) // batch_size",
           "return num_samples // (world * batch_size)",
           (), "train_steps as one floor division",
           equivalent="floor(floor(n / w) / b) == floor(n / (w * b)) for positive integers: same value always"),
    Mutant("no_decay_list_dropped", "pipeline/optim.py",
           "groups = timm.optim.param_groups_weight_decay(model, train.weight_decay, no_weight_decay_list=no_decay)",
           "groups = timm.optim.param_groups_weight_decay(model, train.weight_decay)",
           (), "methods' no_weight_decay() names not passed to timm",
           equivalent="Method.no_weight_decay returns parameters with ndim <= 1 only, which timm's "
                      "param_groups_weight_decay already keeps out of weight decay"),
]


# ---------------------------------------------------------------- running
IGNORE = shutil.ignore_patterns(".git", ".venv", ".data", "__pycache__", ".pytest_cache", "runs", "*.pyc")


def scratch_copy(parent: Path, name: str) -> Path:
    dst = parent / name
    shutil.copytree(REPO, dst, ignore=IGNORE, symlinks=True)
    for link in (".data", ".venv"):
        if (REPO / link).exists():
            os.symlink(os.path.realpath(REPO / link), dst / link)
    return dst


def run_tests(root: Path, tests, timeout: int) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout', seconds, output tail) of `pytest -x -q tests` in `root`."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0", "-m", "", *tests]  # one process, slow tests too
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - start, ""
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    if proc.returncode == 0:
        return "passed", time.time() - start, "\n".join(tail)
    if proc.returncode == 5:  # no tests collected: a stale node id is an error, never a kill
        return "no tests", time.time() - start, "\n".join(tail)
    return "failed", time.time() - start, "\n".join(tail)


def check_snippet(m: Mutant) -> str | None:
    """None if the snippet occurs exactly once, else why the mutant is stale."""
    path = REPO / m.file
    if not path.is_file():
        return f"{m.file} not found"
    count = path.read_text().count(m.original)
    return None if count == 1 else f"snippet found {count} times in {m.file}"


def run_mutant(m: Mutant, root: Path, timeout: int) -> dict:
    path = root / m.file
    original = path.read_text()
    path.write_text(original.replace(m.original, m.replacement))
    try:
        outcome, seconds, tail = run_tests(root, m.tests, timeout)
    finally:
        path.write_text(original)
    status = {"failed": "killed", "passed": "SURVIVED", "timeout": "timeout", "no tests": "STALE"}[outcome]
    return {"status": status, "seconds": seconds, "tail": tail}


def main():
    # Automatic mutants (cosmic-ray operators, coverage-guided): bench/mutation_auto.py takes the flags
    # "--auto", "--module", "--jobs", "--budget", "--list", "--add-coverage", "--fresh-coverage", "--exclude-tests",
    # "--rerun" and "--write".
    if "--auto" in sys.argv[1:]:
        import mutation_auto

        return mutation_auto.main([a for a in sys.argv[1:] if a != "--auto"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run only this mutant (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel, each in its own scratch copy")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant's test run")
    parser.add_argument("--skip-baseline", action="store_true", help="do not first run the tests unmutated")
    args = parser.parse_args()

    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)), "duplicate mutant names"
    unknown = set(args.only) - set(names)
    if unknown:
        sys.exit(f"unknown mutant(s) {sorted(unknown)}; --list shows the names")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        rows = [[m.name, m.file, "equivalent" if m.equivalent else " ".join(m.tests), m.description] for m in chosen]
        print(markdown_table(["mutant", "file", "tests", "bug"], rows))
        return

    results: dict[str, dict] = {}
    runnable = []
    for m in chosen:
        stale = check_snippet(m)
        if stale:
            results[m.name] = {"status": "STALE", "seconds": 0.0, "tail": stale}
        elif m.equivalent:
            results[m.name] = {"status": "equivalent", "seconds": 0.0, "tail": m.equivalent}
        else:
            runnable.append(m)

    print(f"load average {load_average():.2f}; {len(runnable)} mutants to run, {args.jobs} job(s)", flush=True)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="mutations-") as tmp:
        roots: Queue = Queue()
        for j in range(max(1, args.jobs)):
            roots.put(scratch_copy(Path(tmp), f"copy{j}"))
        if not args.skip_baseline and runnable:
            tests = sorted({t for m in runnable for t in m.tests})
            root = roots.get()
            outcome, seconds, tail = run_tests(root, tests, args.timeout * 2)
            roots.put(root)
            print(f"baseline (unmutated, {len(tests)} test ids): {outcome} in {seconds:.0f} s", flush=True)
            if outcome != "passed":
                sys.exit(f"the tests fail without any mutant, so no kill would mean anything:\n{tail}")

        def work(m: Mutant) -> None:
            root = roots.get()
            try:
                results[m.name] = run_mutant(m, root, args.timeout)
            finally:
                roots.put(root)
            r = results[m.name]
            print(f"  {m.name}: {r['status']} ({r['seconds']:.0f} s)", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(work, runnable))

    rows = []
    for m in chosen:
        r = results[m.name]
        note = m.description if r["status"] not in ("STALE", "equivalent") else f"{m.description} -- {r['tail']}"
        rows.append([m.name, m.file, r["status"], f"{r['seconds']:.0f}", note])
    print()
    print(markdown_table(["mutant", "file", "result", "s", "bug"], rows))
    counts = {s: sum(r["status"] == s for r in results.values())
              for s in ("killed", "timeout", "SURVIVED", "equivalent", "STALE")}
    scored = counts["killed"] + counts["timeout"] + counts["SURVIVED"]
    score = 100 * (counts["killed"] + counts["timeout"]) / scored if scored else float("nan")
    print(f"\nmutation score {score:.1f}% ({counts['killed']} killed + {counts['timeout']} timeout of {scored} scored; "
          f"{counts['SURVIVED']} survived, {counts['equivalent']} equivalent excluded, {counts['STALE']} STALE); "
          f"{time.time() - start:.0f} s, load average {load_average():.2f}")
    for m in chosen:
        if results[m.name]["status"] in ("SURVIVED", "STALE"):
            print(f"{results[m.name]['status']}: {m.name} ({m.file}): {results[m.name]['tail']}")
    sys.exit(1 if counts["STALE"] or counts["SURVIVED"] else 0)


if __name__ == "__main__":
    main()
