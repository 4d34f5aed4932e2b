"""The teacher cache of a comparison (`launch/compare.py --teacher-cache PATH|auto`): one teacher pass for
every run that the cache can serve.

`auto` writes the cache into OUT/teacher-cache first (in this process, launch/cache_teacher.py's pass):
the most views any of the methods needs, the temperatures they use, the features when one of them needs
them (or `teacher.cache_features true`), K = `teacher.cache_topk`, `train.epochs` epochs; rerunning the
comparison continues or reuses it. Every run of the comparison then gets the cache's `data.aug_seed`
(the seeds change the sample order and the initial weights, not the views), so a cached run and a live
run of the same seed see the same views. A method the cache cannot serve (a need it lacks: features,
views, a temperature) runs with the live teacher, and the reason is printed and kept in results.jsonl.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Config, parse_args
from pipeline.data import dataset_root, dataset_sources
from pipeline.errors import UserError
from pipeline.methods import METHODS, parse_method, teacher_needs
from pipeline.teacher_cache.manifest import load_manifest, read_manifest

AUTO = "auto"
AUTO_AUG_SEED = 0  # the views of an automatic cache when data.aug_seed is -1 (= the first seed's)


@dataclass
class SweepCache:
    root: Path
    aug_seed: int
    pass_s: float | None = None  # wall time of the pass this invocation ran (None: reused)
    sources: dict = field(default_factory=dict)  # method -> "cache", or "live: <reason>"


def needs_teacher(method: str) -> bool:
    return any(METHODS[n].needs_teacher for n in parse_method(method))


def pass_argv(cfg: Config, config_argv: list[str], methods: list[str], root: Path, aug_seed: int) -> list[str]:
    """launch/cache_teacher.py's flags for the cache every method of the comparison can read."""
    taught = [m for m in methods if needs_teacher(m)]
    views = max(METHODS[n].views for m in taught for n in parse_method(m))
    temperatures = sorted({float(t) for m in taught for t in teacher_needs(m, cfg).temperatures.values()})
    features = cfg.teacher.cache_features or any(teacher_needs(m, cfg).features for m in taught)
    return config_argv + ["--teacher.cache", str(root), "--views", str(views), "--epochs", str(cfg.train.epochs),
                          "--teacher.cache_features", "true" if features else "false",
                          "--data.aug_seed", str(aug_seed)] + (
        ["--temperatures", ",".join(map(str, temperatures))] if temperatures else [])


def prepare(spec: str, cfg: Config, config_argv: list[str], methods: list[str], out: Path) -> SweepCache | None:
    """The comparison's cache: `spec` '' (none), a folder holding a complete cache, or 'auto' (written
    now into OUT/teacher-cache, or continued there)."""
    if not spec or not any(needs_teacher(m) for m in methods):
        return None
    if spec != AUTO:
        manifest = load_manifest(spec)  # one line when missing or incomplete
        return SweepCache(Path(spec), int(manifest.made_from["data.aug_seed"]))
    root = out / "teacher-cache"
    aug_seed = cfg.data.aug_seed if cfg.data.aug_seed >= 0 else AUTO_AUG_SEED
    existing = read_manifest(root)
    if existing is not None and existing.complete:
        return SweepCache(root, int(existing.made_from["data.aug_seed"]))
    import cache_teacher  # launch/, on the path where compare.py runs

    start = time.time()
    cache_teacher.run(*cache_teacher.parse(pass_argv(cfg, config_argv, methods, root, aug_seed)))
    return SweepCache(root, aug_seed, pass_s=time.time() - start)


def run_argv(sweep: SweepCache | None, base_argv: list[str], name: str, run_flags: list[str],
             seed_argv: list[str]) -> list[str]:
    """The flags that make the run `name` (configured by `run_flags`: `--method M`, or a variant's flags)
    read its teacher from the cache, or only take the cache's aug_seed when the cache cannot serve it (the
    reason kept in `sweep.sources`)."""
    if sweep is None:
        return []
    flags = ["--data.aug_seed", str(sweep.aug_seed)]
    if not needs_teacher(parse_args(base_argv + run_flags)[0].method):
        return flags
    if name not in sweep.sources:
        sweep.sources[name] = source(sweep, base_argv + run_flags + seed_argv + flags)
    return flags + (["--teacher.cache", str(sweep.root)] if sweep.sources[name] == "cache" else [])


def source(sweep: SweepCache, argv: list[str]) -> str:
    """'cache' when the cache serves a run of `argv`, else 'live: <the one-line reason>'."""
    from pipeline.teacher_cache.use import check_for_run

    cfg, _ = parse_args(argv + ["--teacher.cache", str(sweep.root)])
    try:
        train = dataset_sources(cfg.data, dataset_root(cfg.data))[0]
        check_for_run(cfg, train, max(METHODS[n].views for n in parse_method(cfg.method)))
    except UserError as e:
        return f"live: {e}"
    return "cache"


def note(sweep: SweepCache) -> str:
    """The results.md paragraph: where each method's teacher came from."""
    cached = [m for m, s in sweep.sources.items() if s == "cache"]
    live = [f"{m} ({s[len('live: '):]})" for m, s in sweep.sources.items() if s != "cache"]
    made = f"written in {sweep.pass_s:.0f} s by this comparison" if sweep.pass_s is not None else "reused"
    lines = [f"Teacher outputs from the cache {sweep.root} ({made}; data.aug_seed {sweep.aug_seed} for every run) "
             f"for: {', '.join(cached) or 'none'}."]
    if live:
        lines.append(f"Live teacher for: {'; '.join(live)}.")
    return "\n".join(lines) + "\n"
