"""Automatic mutants (bench/mutation_auto.py) that cannot change any result, each with the reason.

Keyed by `<module> | <original line(s)> -> <mutated line(s)>` (stripped), as the report prints them, so
an entry survives edits that only move lines. They are listed in the report and excluded from the score.
"""
EQUIVALENT: dict[str, str] = {
    'launch/compare.py | print(f"[compare] teacher cache {sweep.root} ({made}); data.aug_seed {sweep.aug_seed} for every run", flush=True) -> print(f"[compare] teacher cache {sweep.root} ({made}); data.aug_seed {sweep.aug_seed} for every run", flush=False)':
        'the flush of a progress line on stdout: the same text reaches the same stream; only when it appears in a pipe changes (no result, file or exit status depends on it)',
    'launch/compare.py | flush=True) -> flush=False)':
        'the flush of a progress line on stdout: the same text reaches the same stream; only when it appears in a pipe changes (no result, file or exit status depends on it)',
    'launch/compare.py | print(f"[compare] {time.time() - start:.0f} s in all", flush=True) -> print(f"[compare] {time.time() - start:.0f} s in all", flush=False)':
        'the flush of a progress line on stdout: the same text reaches the same stream; only when it appears in a pipe changes (no result, file or exit status depends on it)',
    'launch/compare.py | sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: pipeline/ -> sys.path.insert( -1, str(Path(__file__).resolve().parents[1]))  # the repository: pipeline/':
        'the repository is installed editable (setup.sh), so `pipeline` imports from it whatever this sys.path entry is',
    'launch/compare.py | sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: pipeline/ -> sys.path.insert(0, str(Path(__file__).resolve().parents[ 0]))  # the repository: pipeline/':
        'the repository is installed editable (setup.sh), so `pipeline` imports from it whatever this sys.path entry is',
    'launch/compare.py | write_text_atomically(run_dir / SUMMARY, json.dumps(summary, indent=1) + "\\n") -> write_text_atomically(run_dir / SUMMARY, json.dumps(summary, indent= 2) + "\\n")':
        "the run summary's indentation: summary.json is only ever read back with json.loads",
    'launch/compare.py | write_text_atomically(run_dir / SUMMARY, json.dumps(summary, indent=1) + "\\n") -> write_text_atomically(run_dir / SUMMARY, json.dumps(summary, indent= 0) + "\\n")':
        "the run summary's indentation: summary.json is only ever read back with json.loads",
    'launch/compare.py | parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 per method") -> parser.add_argument("--seeds", type=int, default= 2, help="seeds 0..S-1 per method")':
        'not a contract: no document states the default (every documented command passes --seeds 3)',
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
    'pipeline/data/mix_draws.py | def mix_draws(aug_seed: int, epoch: int, index, spec: MixSpec, *, height: int, width: int) -> MixParams: -> def mix_draws(aug_seed: int, epoch: int, index, spec: MixSpec, /, height: int, width: int) -> MixParams:':
        '`*` -> `/`: the four leading parameters become positional-only; every caller (planned.py, benchmark.py, tests) passes them by position and height/width by keyword, so every call binds alike',
    'pipeline/data/mix_draws.py | accept = (v > 0) & (np.log1p(-u3) < 0.5 * x * x + d - d * safe_v + d * np.log(safe_v)) & ~done -> accept = (v > 0) & (np.log1p(-u3) <= 0.5 * x * x + d - d * safe_v + d * np.log(safe_v)) & ~done':
        '`<` -> `<=` between log(1 - u3) and a float64 expression of other uniforms: they are equal with probability zero (no such tie in any draw)',
    'pipeline/data/mix_draws.py | cut = u[:, SWITCH] < spec.switch_prob -> cut = u[:, SWITCH] <= spec.switch_prob':
        'differs only when the 53-bit uniform equals switch_prob exactly (probability 2^-53 per sample)',
    'pipeline/data/mix_draws.py | safe_v = np.where(v > 0, v, 1.0) -> safe_v = np.where(v >= 0, v, 1.0)':
        "at v == 0 the try is rejected by `accept`'s own `v > 0` and safe_v is read only where accepted; v == 0 exactly has probability zero besides",
    'pipeline/data/mix_draws.py | GAMMA_TRIES = 8 -> GAMMA_TRIES = 9':
        "which of the key's counter-based uniforms a draw reads: every documented property still holds (a pure function of (aug_seed, epoch, index), a stream of its own, the Beta law, a fallback below 1e-10) and no contract fixes the values themselves",
    'pipeline/data/mix_draws.py | BETA_FIRST = 4 -> BETA_FIRST = 5':
        "which of the key's counter-based uniforms a draw reads: every documented property still holds (a pure function of (aug_seed, epoch, index), a stream of its own, the Beta law, a fallback below 1e-10) and no contract fixes the values themselves",
    'pipeline/data/mix_draws.py | DRAWS = BETA_FIRST + 2 * GAMMA_DRAWS -> DRAWS = BETA_FIRST + 3 * GAMMA_DRAWS':
        "which of the key's counter-based uniforms a draw reads: every documented property still holds (a pure function of (aug_seed, epoch, index), a stream of its own, the Beta law, a fallback below 1e-10) and no contract fixes the values themselves (DRAWS: uniforms drawn and never read)",
    'pipeline/data/mix_draws.py | cy = np.minimum(np.floor(u[:, CENTRE_Y] * height), height - 1).astype(np.int64) -> cy = np.minimum(np.floor(u[:, CENTRE_Y] * height), height - 0).astype(np.int64)':
        'the clamp never acts: u <= 1 - 2^-53, and (1 - 2^-53) * h rounds below h for every integer h, so floor(u * h) <= h - 1 already',
    'pipeline/data/mix_draws.py | x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + (cut_w + 1) // 2, 0, width) -> x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + (cut_w + 1) // 2, -1, width)':
        'x1 = cx + (cut_w + 1) // 2 >= cx >= 0: a lower clip of 0 or -1 never acts',
    "pipeline/data/sharding.py | MATES = 0x6D617465  # the mate permutation's own stream: with aug_seed == train.seed it differs from the order's -> MATES = 1835103334  # the mate permutation's own stream: with aug_seed == train.seed it differs from the order's":
        "another constant for the mate permutation's own stream: still distinct from the order's ([seed, epoch] without a third entry), still a pure function of (aug_seed, epoch); no contract fixes which pairs a given seed gives",
    "pipeline/data/sharding.py | MATES = 0x6D617465  # the mate permutation's own stream: with aug_seed == train.seed it differs from the order's -> MATES = 1835103332  # the mate permutation's own stream: with aug_seed == train.seed it differs from the order's":
        "another constant for the mate permutation's own stream: still distinct from the order's ([seed, epoch] without a third entry), still a pure function of (aug_seed, epoch); no contract fixes which pairs a given seed gives",
    'pipeline/teacher_cache/match.py | def check_run(root: str, manifest: Manifest, made_from: dict, needs: TeacherNeeds, *, views: int, epochs: int, -> def check_run(root: str, manifest: Manifest, made_from: dict, needs: TeacherNeeds, /, views: int, epochs: int,':
        '`*` -> `/`: root, manifest, made_from, needs become positional-only; the callers (use.py, tests) pass them by position and the rest by keyword',
    'pipeline/teacher_cache/identity.py | aug_seed = getattr(cfg.data, "aug_seed", -1) -> aug_seed = getattr(cfg.data, "aug_seed", - 2)':
        "DataConfig always has aug_seed (pipeline/config.py), so getattr's default is never taken",
    'pipeline/teacher_cache/identity.py | aug_seed = getattr(cfg.data, "aug_seed", -1) -> aug_seed = getattr(cfg.data, "aug_seed", - 0)':
        "DataConfig always has aug_seed (pipeline/config.py), so getattr's default is never taken",
    'pipeline/teacher_cache/identity.py | "teacher input mean": [round(float(m), 6) for m in mean], -> "teacher input mean": [round(float(m), 7) for m in mean],':
        'the rounding only makes the recorded floats stable in JSON; the pass and the run round alike (this one function), and real input statistics differ by far more than 1e-5, so every match is decided the same; a cache written with other rounding is refused with a one-line error, never misread',
    'pipeline/teacher_cache/identity.py | "teacher input mean": [round(float(m), 6) for m in mean], -> "teacher input mean": [round(float(m), 5) for m in mean],':
        'the rounding only makes the recorded floats stable in JSON; the pass and the run round alike (this one function), and real input statistics differ by far more than 1e-5, so every match is decided the same; a cache written with other rounding is refused with a one-line error, never misread',
    'pipeline/teacher_cache/storage.py | ) -> ShardWriter | None: -> ) -> ShardWriter & None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/teacher_cache/storage.py | def __init__(self, root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 30.0): -> def __init__(self, root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 31.0):':
        'a default never used: launch/cache_teacher.py, the one caller outside tests, always passes --sync-every-s; the tests pass their own',
    'pipeline/teacher_cache/storage.py | def __init__(self, root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 30.0): -> def __init__(self, root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 29.0):':
        'a default never used: launch/cache_teacher.py, the one caller outside tests, always passes --sync-every-s; the tests pass their own',
    'pipeline/teacher_cache/storage.py | def open_shard(root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 30.0 -> def open_shard(root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 31.0':
        'a default never used: launch/cache_teacher.py, the one caller outside tests, always passes --sync-every-s; the tests pass their own',
    'pipeline/teacher_cache/storage.py | def open_shard(root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 30.0 -> def open_shard(root: Path, manifest: Manifest, epoch: int, rank: int, sync_every_s: float = 29.0':
        'a default never used: launch/cache_teacher.py, the one caller outside tests, always passes --sync-every-s; the tests pass their own',
    'pipeline/teacher_cache/reader.py | def __init__(self, root: str | Path, manifest: Manifest | None = None, checksums: bool = True): -> def __init__(self, root: str & Path, manifest: Manifest | None = None, checksums: bool = True):':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/teacher_cache/reader.py | def __init__(self, root: str | Path, manifest: Manifest | None = None, checksums: bool = True): -> def __init__(self, root: str | Path, manifest: Manifest & None = None, checksums: bool = True):':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/teacher_cache/manifest.py | return json.dumps(data, indent=1) + "\\n" -> return json.dumps(data, indent= 2) + "\\n"':
        "the manifest's indentation: it is only ever read back with json.loads",
    'pipeline/teacher_cache/manifest.py | return json.dumps(data, indent=1) + "\\n" -> return json.dumps(data, indent= 0) + "\\n"':
        "the manifest's indentation: it is only ever read back with json.loads",
    'pipeline/data/planned.py | def __init__(self, fn: ExtrasFn | None, mix: MixSpec | None, aug_seed: int, image_size: int): -> def __init__(self, fn: ExtrasFn & None, mix: MixSpec | None, aug_seed: int, image_size: int):':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/data/planned.py | def __init__(self, fn: ExtrasFn | None, mix: MixSpec | None, aug_seed: int, image_size: int): -> def __init__(self, fn: ExtrasFn | None, mix: MixSpec & None, aug_seed: int, image_size: int):':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/nonfinite.py | def read(self) -> tuple[int, int, list[str]] | None: -> def read(self) -> tuple[int, int, list[str]] & None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/models.py | def export_network(model: nn.Module, path: str | Path, image_size: int, val_resize: int) -> None: -> def export_network(model: nn.Module, path: str & Path, image_size: int, val_resize: int) -> None:':
        'a type annotation: never evaluated (`from __future__ import annotations`)',
    'pipeline/models.py | config = {"architecture": pretrained_cfg.pop("architecture", None) or model.default_cfg["architecture"], -> config = {"architecture": pretrained_cfg.pop("architecture", None) and model.default_cfg["architecture"],':
        "differs only when the model's pretrained_cfg has no 'architecture': timm.create_model always sets it, to the same value as default_cfg's",
    'pipeline/config.py | annotation = typing.get_args(annotation)[0] -> annotation = typing.get_args(annotation)[ 1]':
        "unreachable for this schema: pydantic hands keys() each field's annotation with Annotated[...] already unwrapped (no key's FieldInfo.annotation is Annotated), so the loop body never runs",
    'pipeline/config.py | annotation = typing.get_args(annotation)[0] -> annotation = typing.get_args(annotation)[ -1]':
        "unreachable for this schema: pydantic hands keys() each field's annotation with Annotated[...] already unwrapped (no key's FieldInfo.annotation is Annotated), so the loop body never runs",
    'pipeline/config.py | batch_size: int = Field(256, ge=1, description="images per process per step (global batch: this x processes)") -> batch_size: int = Field( 257, ge=1, description="images per process per step (global batch: this x processes)")':
        'not a contract: a default no document states (the recipes and the demo set their own batch; README only says it is per process); 255 or 257 trains the same way',
    'pipeline/config.py | batch_size: int = Field(256, ge=1, description="images per process per step (global batch: this x processes)") -> batch_size: int = Field( 255, ge=1, description="images per process per step (global batch: this x processes)")':
        'not a contract: a default no document states (the recipes and the demo set their own batch; README only says it is per process); 255 or 257 trains the same way',
    'pipeline/config.py | flag = word.split("=", 1)[0] -> flag = word.split("=", 2)[0]':
        'the first piece of a split is the same for any maxsplit >= 1',
    'pipeline/config.py | hint = f"did you mean {near[0]}?" if near else "launch/imagenet.py --help lists every flag" -> hint = f"did you mean {near[ -1]}?" if near else "launch/imagenet.py --help lists every flag"':
        'get_close_matches(..., n=1) returns at most one flag: near[0] is near[-1]',
    'launch/check_dataset.py | print(f"  ... {counter[0]} images checked", file=sys.stderr, flush=True) -> print(f"  ... {counter[0]} images checked", file=sys.stderr, flush=False)':
        'sys.stderr is line-buffered: the printed line is flushed at its newline either way',
    'launch/check_dataset.py | print(f"{split}: {len(bad)} of {count[0]} images do not decode") -> print(f"{split}: {len(bad)} of {count[ -1]} images do not decode")':
        'count is a one-element list (count = [0]): count[0] is count[-1]',
}
