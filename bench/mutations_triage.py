"""Automatic mutants (bench/mutation_auto.py) that cannot change any result, each with the reason.

Keyed by `<module> | <original line(s)> -> <mutated line(s)>` (stripped), as the report prints them, so
an entry survives edits that only move lines. They are listed in the report and excluded from the score.
"""
EQUIVALENT: dict[str, str] = {
    'kernels/reference.py | logits = z_s.to(dtype) @ z_t.to(dtype).T * scale + bias.to(dtype) -> logits = z_s.to(dtype) @ z_t.to(dtype).T * scale - bias.to(dtype)':
        '`bias` cancels in every softmax of the ICD loss (rows and columns), as the docstring says: + b and - b give the same loss',
    'kernels/reference.py | mean = x.mean(dim=0, keepdim=True) -> mean = x.mean(dim=0, keepdim=False)':
        'a (1, D) or (D,) mean/variance broadcasts the same way against (B, D)',
    'kernels/reference.py | var = (x - mean).square().mean(dim=0, keepdim=True) -> var = (x - mean).square().mean(dim=0, keepdim=False)':
        'a (1, D) or (D,) mean/variance broadcasts the same way against (B, D)',
    'kernels/reference.py | targets = torch.arange(logits.shape[0], device=logits.device) -> targets = torch.arange(logits.shape[ 1], device=logits.device)':
        'the ICD logits are square (B x B): shape[0] == shape[1] == shape[-1]',
    'kernels/reference.py | targets = torch.arange(logits.shape[0], device=logits.device) -> targets = torch.arange(logits.shape[ -1], device=logits.device)':
        'the ICD logits are square (B x B): shape[0] == shape[1] == shape[-1]',
    'pipeline/data/folder.py | def list_image_folder(root: str | Path, per_class: int = 0) -> FolderListing: -> def list_image_folder(root: str & Path, per_class: int = 0) -> FolderListing:':
        'an annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/methods/slkd.py | ce_weight = 0.4  # (lambda + eta) * alpha at the defaults; the instance computes it from the config -> ce_weight = 1.4  # (lambda + eta) * alpha at the defaults; the instance computes it from the config':
        "the class attribute only marks that SLKD sets the CE weight (parse_method reads `is not None`); the value used is the instance's, computed from the config",
    'pipeline/methods/slkd.py | ce_weight = 0.4  # (lambda + eta) * alpha at the defaults; the instance computes it from the config -> ce_weight = -0.6  # (lambda + eta) * alpha at the defaults; the instance computes it from the config':
        "the class attribute only marks that SLKD sets the CE weight (parse_method reads `is not None`); the value used is the instance's, computed from the config",
    'pipeline/methods/slkd.py | self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed) -> self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 - seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed) -> self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 - seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed) -> self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 / 1 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed) -> self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 / 2 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed) -> self.sl1 = build_seeded(ctx.build_teacher_like, 1000004 * 1 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed) -> self.sl1 = build_seeded(ctx.build_teacher_like, 1000002 * 1 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed) -> self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed) -> self.sl1 = build_seeded(ctx.build_teacher_like, 1_000_003 * 0 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed) -> self.sl2 = build_seeded(ctx.build_teacher_like, 1000004 * 2 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed) -> self.sl2 = build_seeded(ctx.build_teacher_like, 1000002 * 2 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed) -> self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 3 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/methods/slkd.py | self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 2 + seed) -> self.sl2 = build_seeded(ctx.build_teacher_like, 1_000_003 * 1 + seed)':
        'the contract is two distinct, train.seed-dependent initialisations of the SL teachers; every such mutant keeps them distinct and seed-dependent (at train.seed 0 the +/- variants are identical)',
    'pipeline/checkpoint.py | (tmp / COMPLETE).write_text(json.dumps(sizes, indent=1))  # a manifest: truncation is detectable -> (tmp * COMPLETE).write_text(json.dumps(sizes, indent=1))  # a manifest: truncation is detectable':
        "the manifest's indentation: it is only ever read back with json.loads",
    'pipeline/checkpoint.py | (tmp / COMPLETE).write_text(json.dumps(sizes, indent=1))  # a manifest: truncation is detectable -> (tmp / COMPLETE).write_text(json.dumps(sizes, indent= 2))  # a manifest: truncation is detectable':
        "the manifest's indentation: it is only ever read back with json.loads",
    'pipeline/checkpoint.py | (tmp / COMPLETE).write_text(json.dumps(sizes, indent=1))  # a manifest: truncation is detectable -> (tmp / COMPLETE).write_text(json.dumps(sizes, indent= 0))  # a manifest: truncation is detectable':
        "the manifest's indentation: it is only ever read back with json.loads",
    'pipeline/config.py | def load_yaml(path: str | Path) -> dict: -> def load_yaml(path: str & Path) -> dict:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/data/webdataset.py | def list_shards(split_dir: str | Path) -> Shards: -> def list_shards(split_dir: str & Path) -> Shards:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/methods/base.py | def check_combination(cls, names: list[str]) -> str | None: -> def check_combination(cls, names: list[str]) -> str & None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/distiller.py | def forward(self, images: torch.Tensor, labels: torch.Tensor, teacher: NetOutput | None, views: int, -> def forward(self, images: torch.Tensor, labels: torch.Tensor, teacher: NetOutput & None, views: int,':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/checkpoint.py | def _write_failed(accelerator, run_dir: Path, final: Path, error: Exception | None): -> def _write_failed(accelerator, run_dir: Path, final: Path, error: Exception & None):':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/checkpoint.py | def find_latest(run_dir: Path) -> Path | None: -> def find_latest(run_dir: Path) -> Path & None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/checkpoint.py | def read_loader_state(path: Path, process: int) -> dict | None: -> def read_loader_state(path: Path, process: int) -> dict & None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/models.py | def load_weights(model: nn.Module, path: str | Path) -> None: -> def load_weights(model: nn.Module, path: str & Path) -> None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/models.py | def save_weights(model: nn.Module, path: str | Path) -> None: -> def save_weights(model: nn.Module, path: str & Path) -> None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/models.py | def save_timm_folder(model: nn.Module, out_dir: str | Path, image_size: int, val_resize: int) -> None: -> def save_timm_folder(model: nn.Module, out_dir: str & Path, image_size: int, val_resize: int) -> None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/plot.py | def read_metrics(run_dir: str | Path) -> list[dict]: -> def read_metrics(run_dir: str & Path) -> list[dict]:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/plot.py | def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None, -> def plot_runs(run_dirs: list[str & Path], out: str | Path, labels: list[str] | None = None,':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/plot.py | def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None, -> def plot_runs(run_dirs: list[str | Path], out: str & Path, labels: list[str] | None = None,':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/plot.py | def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None, -> def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] & None = None,':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/plot.py | def save(fig, out: str | Path) -> Path: -> def save(fig, out: str & Path) -> Path:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/compare.py | def teacher_row(results: list[dict]) -> tuple[float, float] | None: -> def teacher_row(results: list[dict]) -> tuple[float, float] & None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/compare.py | def markdown(rows: list[dict], teacher: tuple[float, float] | None, cfg, seeds: list[int]) -> str: -> def markdown(rows: list[dict], teacher: tuple[float, float] & None, cfg, seeds: list[int]) -> str:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/check_dataset.py | def split_items(root: Path, split: str, fmt: str) -> Iterator[tuple[str, bytes | Exception]]: -> def split_items(root: Path, split: str, fmt: str) -> Iterator[tuple[str, bytes & Exception]]:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'launch/check_dataset.py | def pil_undecodable(items: Iterable[tuple[str, bytes | Exception]]) -> list[tuple[str, str]]: -> def pil_undecodable(items: Iterable[tuple[str, bytes & Exception]]) -> list[tuple[str, str]]:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/checkpoint.py | doomed = complete[:-keep] if keep > 0 else [] -> doomed = complete[:-keep] if keep >= 0 else []':
        'keep = 0 gives complete[:-0] == complete[:0] == []: the same nothing-pruned list either way',
    'pipeline/baseline.py | text = json.dumps({"student": d["student"], "data": data, "train": train}, sort_keys=True) -> text = json.dumps({"student": d["student"], "data": data, "train": train}, sort_keys=False)':
        'the dicts come from the pydantic model in its fixed field order, so within one version the text is the same; sort_keys only keeps keys stable across versions that reorder fields, which no test can run',
    'launch/check_dataset.py | sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install -> sys.path.insert( 1, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install':
        'the repository is installed editable (setup.sh: `pip install -e .`), so `pipeline` imports whatever this path is',
    'launch/check_dataset.py | sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install -> sys.path.insert( -1, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install':
        'the repository is installed editable (setup.sh: `pip install -e .`), so `pipeline` imports whatever this path is',
    'launch/check_dataset.py | sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install -> sys.path.insert(0, str(Path(__file__).resolve().parents[ 2]))  # runnable from a checkout without install':
        'the repository is installed editable (setup.sh: `pip install -e .`), so `pipeline` imports whatever this path is',
    'launch/check_dataset.py | sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install -> sys.path.insert(0, str(Path(__file__).resolve().parents[ 0]))  # runnable from a checkout without install':
        'the repository is installed editable (setup.sh: `pip install -e .`), so `pipeline` imports whatever this path is',
    'pipeline/data/filelist.py | def read_file_list(path: Path, keep_per_class: int = 0) -> tuple[list[str], list[int]]: -> def read_file_list(path: Path, keep_per_class: int = -1) -> tuple[list[str], list[int]]:':
        '`keep_per_class <= 0` keeps every line: a default of -1 means all, as 0 does',
}
