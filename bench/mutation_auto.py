"""Automatic mutants (`bench/mutations.py --auto`): cosmic-ray's operators, coverage-guided test selection.

Every mutant is one operator applied at one place of a module: cosmic-ray's (arithmetic, comparison and
boundary, boolean, unary, number +-1, loop-skipping, exception-type replacement) plus one of ours that
swaps a bound's keyword (ge <-> gt, le <-> lt: the pydantic schema's bounds live in class bodies, which
function-level tools such as mutmut do not mutate). Only the tests that executed the mutated lines run
for it, fastest first, stopping at the first failure:

1. Coverage pass (once, cached; `--fresh-coverage` redoes it, `--add-coverage FILES` adds new tests; lines
   moved by later edits are carried over by their text): the README's test selection runs
   under coverage with each line labelled by the test that ran it, in every process (xdist workers and the
   `accelerate launch` workers that tests start; bench/mutation_site/). A line run only at import time (a
   class body, a Field's bounds) is covered by every test that ran anything of its module.
2. Mutants: in a scratch copy per job, a fork server (bench/mutation_worker.py) that imported torch, timm
   and the rest once forks a child per mutant, which writes the mutant and runs its tests in-process.
   Tests that failed in the coverage pass are never selected. A mutant's tests are capped at `--budget`
   seconds of their recorded durations (the fastest first; the 3 fastest in a first child, the rest only
   if the mutant survived them): a survivor says how many it ran.
3. Results go to bench/.mutations/results.jsonl (restartable: a killed mutant of unchanged source is not
   rerun; a survivor is rerun when its selected tests or their files changed). Equivalent mutants are
   triaged in bench/mutations_triage.py with the reason; they are excluded from the score.

    .venv/bin/python bench/mutations.py --auto --jobs 2                              # pipeline/, launch/, kernels/reference.py
    .venv/bin/python bench/mutations.py --auto --module pipeline/metrics.py --module 'pipeline/data/*.py'
    .venv/bin/python bench/mutations.py --auto --module pipeline/config.py --list    # the mutants, no run
"""
from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load_average, markdown_table  # noqa: E402

STATE = REPO / "bench" / ".mutations"
SITE = REPO / "bench" / "mutation_site"
SCOPE = ("pipeline/*.py", "kernels/reference.py", "launch/*.py")  # fnmatch: * also matches /
SOURCE_DIRS = ("pipeline", "kernels", "launch")
# CUDA/GPU-only code cannot run here: functions whose name matches are not mutated (by name, as documented).
EXCLUDE_FUNCTIONS = ("*cuda*", "*gpu*", "*nvjpeg*", "*mixed_device*")
RELEVANT_MAX_S = 5.0  # a test named after the mutated line runs first only when it is this quick
OPERATORS = (  # cosmic-ray's names; the realistic one-token bugs, not every operator pair
    "core/ReplaceBinaryOperator_Add_Sub", "core/ReplaceBinaryOperator_Sub_Add", "core/ReplaceBinaryOperator_Mul_Div",
    "core/ReplaceBinaryOperator_Div_Mul", "core/ReplaceBinaryOperator_Div_FloorDiv",
    "core/ReplaceBinaryOperator_FloorDiv_Div", "core/ReplaceBinaryOperator_Mod_FloorDiv",
    "core/ReplaceBinaryOperator_Pow_Mul", "core/ReplaceBinaryOperator_BitAnd_BitOr",
    "core/ReplaceBinaryOperator_BitOr_BitAnd",
    "core/ReplaceComparisonOperator_Eq_NotEq", "core/ReplaceComparisonOperator_NotEq_Eq",
    "core/ReplaceComparisonOperator_Lt_LtE", "core/ReplaceComparisonOperator_LtE_Lt",
    "core/ReplaceComparisonOperator_Gt_GtE", "core/ReplaceComparisonOperator_GtE_Gt",
    "core/ReplaceComparisonOperator_Lt_GtE", "core/ReplaceComparisonOperator_Gt_LtE",
    "core/ReplaceComparisonOperator_LtE_Gt", "core/ReplaceComparisonOperator_GtE_Lt",
    "core/ReplaceComparisonOperator_Is_IsNot", "core/ReplaceComparisonOperator_IsNot_Is",
    "core/ReplaceUnaryOperator_USub_UAdd", "core/AddNot", "core/ReplaceTrueWithFalse", "core/ReplaceFalseWithTrue",
    "core/ReplaceAndWithOr", "core/ReplaceOrWithAnd", "core/ReplaceBreakWithContinue",
    "core/ReplaceContinueWithBreak", "core/NumberReplacer", "core/ZeroIterationForLoop", "core/ExceptionReplacer",
    "kdpipe/SwapBoundKeyword",
)


# ---------------------------------------------------------------- tools, installed on demand
def ensure_tools():
    try:
        import cosmic_ray  # noqa: F401
        import coverage  # noqa: F401
    except ImportError:
        uv = Path(sys.executable).with_name("uv")
        pip = [str(uv), "pip", "install", "--python", sys.executable] if uv.exists() else [sys.executable, "-m", "pip", "install"]
        print("[mutations] installing bench/requirements-mutation.txt", flush=True)
        subprocess.run(pip + ["-q", "-r", str(REPO / "bench/requirements-mutation.txt"), "-c", str(REPO / "requirements.txt")],
                       check=True)


def swap_bound_operator():
    """ge <-> gt and le <-> lt in a call's keyword arguments (Field(0, ge=0) -> Field(0, gt=0))."""
    import parso
    from cosmic_ray.operators.operator import Example, Operator

    swap = {"ge": "gt", "gt": "ge", "le": "lt", "lt": "le"}

    class SwapBoundKeyword(Operator):
        def mutation_positions(self, node):
            if node.type == "argument" and node.children[0].type == "name" and node.children[0].value in swap \
                    and len(node.children) == 3 and node.children[1].type == "operator":
                yield node.children[0].start_pos, node.children[0].end_pos

        def mutate(self, node, index):
            name = node.children[0]
            node.children[0] = parso.python.tree.Name(swap[name.value], name.start_pos, name.prefix)
            return node

        @classmethod
        def examples(cls):
            return (Example("Field(0, ge=0)", "Field(0, gt=0)"),)

    return SwapBoundKeyword()


def operator(name: str):
    if name == "kdpipe/SwapBoundKeyword":
        return swap_bound_operator()
    import cosmic_ray.plugins

    return cosmic_ray.plugins.get_operator(name)()


# ---------------------------------------------------------------- mutants
@dataclass
class Mutant:
    module: str  # relative path
    operator: str
    occurrence: int
    first_line: int
    last_line: int
    function: str
    before: str  # the changed lines, stripped
    after: str
    source: str  # the whole mutated module

    @property
    def name(self) -> str:
        return f"{self.module}:{self.first_line}:{self.operator.split('/')[-1]}:{self.occurrence}"

    @property
    def triage_key(self) -> str:
        """What the triage table is keyed by: survives unrelated edits that move lines."""
        return f"{self.module} | {self.before} -> {self.after}"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def enclosing_functions(source: str) -> dict[int, str]:
    """line -> 'Class.method' / 'function' / '' (module level) of the innermost definition."""
    names: dict[int, str] = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                for line in range(child.lineno, (child.end_lineno or child.lineno) + 1):
                    names[line] = qual
                visit(child, qual + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return names


def enumerate_mutants(module: str) -> list[Mutant]:
    """The module's mutants, cached by its text (enumerating re-parses the module for each: a minute for config.py)."""
    source = (REPO / module).read_text()
    cache = STATE / "mutants" / f"{module.replace('/', '__')}-{sha(source + ' '.join(OPERATORS))}.json"
    if cache.is_file():
        return [Mutant(**m, source="") for m in json.loads(cache.read_text())]
    out = _enumerate(module, source)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([{k: v for k, v in vars(m).items() if k != "source"} for m in out]))
    return out


def mutated_source(m: Mutant) -> str:
    from cosmic_ray.mutating import MutationVisitor

    return m.source or MutationVisitor.mutate_code((REPO / m.module).read_text(), operator(m.operator), m.occurrence)


def _enumerate(module: str, source: str) -> list[Mutant]:
    from cosmic_ray.ast import ast_nodes, get_ast
    from cosmic_ray.mutating import MutationVisitor

    functions = enclosing_functions(source)
    lines = source.splitlines()
    ignored = {i + 1 for i, line in enumerate(lines) if "pragma: no mutate" in line}
    seen, out = set(), []
    for name in OPERATORS:
        op = operator(name)
        count = sum(1 for node in ast_nodes(get_ast(source)) for _ in op.mutation_positions(node))
        for occurrence in range(count):
            try:
                mutated = MutationVisitor.mutate_code(source, operator(name), occurrence)
            except Exception:  # an operator that cannot handle this node (cosmic-ray's ExceptionReplacer on `except (A, B)`)
                continue
            if mutated is None or mutated == source or sha(mutated) in seen:
                continue
            seen.add(sha(mutated))
            new = mutated.splitlines()
            diff = [d for d in difflib.ndiff(lines, new) if d[:1] in "-+"]
            changed = [i + 1 for i, (a, b) in enumerate(zip(lines, new)) if a != b] or [len(lines)]
            first, last = changed[0], changed[-1] + max(0, len(lines) - len(new))
            function = functions.get(first, "")
            if ignored & set(range(first, last + 1)):
                continue
            if any(fnmatch.fnmatch(part.lower(), pat) for part in function.split(".") for pat in EXCLUDE_FUNCTIONS):
                continue
            before = " / ".join(d[2:].strip() for d in diff if d[0] == "-")
            after = " / ".join(d[2:].strip() for d in diff if d[0] == "+")
            out.append(Mutant(module, name, occurrence, first, last, function, before, after, mutated))
    return out


def resolve_modules(patterns: list[str]) -> list[str]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    tracked += subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.split()
    in_scope = [f for f in tracked if any(fnmatch.fnmatch(f, p) for p in SCOPE)]
    if not patterns:
        return sorted(set(in_scope))
    chosen = [f for p in patterns for f in sorted(in_scope) if fnmatch.fnmatch(f, p)]  # in the order asked
    if not chosen:
        sys.exit(f"--module {patterns} matches no module in scope ({', '.join(SCOPE)})")
    return list(dict.fromkeys(chosen))


# ---------------------------------------------------------------- coverage: which tests run which lines
def coverage_pass(tests: list[str], jobs: int) -> dict:
    """Run `tests` (the README's selection when empty) under coverage: {"lines": {module: {line: [node ids]}},
    "durations": {node id: s}, "failed": [node ids], "sources": {module: its text when the pass started}}."""
    import coverage

    sources = {str(p.relative_to(REPO)): p.read_text() for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")}
    cov_dir = Path(tempfile.mkdtemp(prefix="kdpipe-cov-"))
    env = {**os.environ, "PYTHONPATH": f"{SITE}{os.pathsep}{REPO}", "KDPIPE_COV_DIR": str(cov_dir),
           "KDPIPE_COV_SOURCE": os.pathsep.join(str(REPO / d) for d in SOURCE_DIRS), "OMP_NUM_THREADS": "1"}
    env.pop("KDPIPE_COV_CONTEXT", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "kdpipe_cov_plugin", "-p", "no:cacheprovider", "-n", str(jobs),
           *tests]
    print(f"[mutations] coverage pass: {' '.join(cmd[1:])}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    print(f"[mutations] coverage pass: exit {proc.returncode}, {time.time() - start:.0f} s; "
          f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''}", flush=True)
    durations, failed = {}, []
    for f in cov_dir.glob("durations-*.json"):
        for k, v in json.loads(f.read_text()).items():
            if k.endswith("::FAILED"):
                failed.append(k[: -len("::FAILED")])
            else:
                durations[k] = durations.get(k, 0.0) + v
    cov = coverage.Coverage(data_file=str(cov_dir / ".coverage"), config_file=False)
    cov.combine([str(cov_dir)])
    data = cov.get_data()
    data.set_query_contexts(None)
    lines = {}
    for measured in data.measured_files():
        path = Path(measured)
        if path.is_relative_to(REPO):
            by_line = data.contexts_by_lineno(measured)
            lines[str(path.relative_to(REPO))] = {str(n): sorted(set(c)) for n, c in by_line.items()}
    return {"lines": lines, "durations": durations, "failed": sorted(failed), "sources": sources,
            "seconds": time.time() - start}


def coverage_map(add: list[str], jobs: int, fresh: bool) -> dict:
    """The cached coverage pass (made on first use or with --fresh-coverage). `add`: test files run under
    coverage now and merged in (their earlier records replaced), for tests written since the pass."""
    cache = STATE / "coverage.json"
    if fresh or not cache.is_file():
        data = coverage_pass([], jobs)
    else:
        data = json.loads(cache.read_text())
    if add:
        new = coverage_pass(add, jobs)
        files = {t.split("::")[0] for t in new["durations"]}
        for module, by_line in data["lines"].items():  # forget what those files ran before
            for line in by_line:
                by_line[line] = [c for c in by_line[line] if c.split("::")[0] not in files]
        for module, by_line in new["lines"].items():
            old = remap(data, module, new["sources"].get(module, ""))
            for line, found in by_line.items():
                old[line] = sorted(set(old.get(line, [])) | set(found))
            data["lines"][module] = old
            data["sources"][module] = new["sources"].get(module, "")
        data["durations"] = {k: v for k, v in data["durations"].items() if k.split("::")[0] not in files}
        data["durations"].update(new["durations"])
        data["failed"] = sorted({f for f in data["failed"] if f.split("::")[0] not in files} | set(new["failed"]))
    if fresh or add or not cache.is_file():
        STATE.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(data))
    return data


def remap(cov: dict, module: str, source: str) -> dict[str, list[str]]:
    """The pass's {line: tests} of `module`, carried over to `source` (lines moved by later edits follow
    their text; an edited or new line gets the tests of every line of its function)."""
    by_line = cov["lines"].get(module, {})
    old = cov.get("sources", {}).get(module)
    if old is None or old == source:
        return dict(by_line)
    old_lines, new_lines = old.splitlines(), source.splitlines()
    out, unmatched = {}, []
    for tag, a0, a1, b0, b1 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag == "equal":
            for k in range(a1 - a0):
                if str(a0 + k + 1) in by_line:
                    out[str(b0 + k + 1)] = by_line[str(a0 + k + 1)]
        else:
            unmatched += range(b0 + 1, b1 + 1)
    functions = enclosing_functions(source)
    for line in unmatched:
        fn = functions.get(line)
        if fn:
            same = {c for other, found in out.items() if functions.get(int(other)) == fn for c in found}
            if same:
                out[str(line)] = sorted(same)
    return out


_REMAPPED: dict[str, dict] = {}
_FIELDS: dict[str, list[tuple[int, int, str]]] = {}


def field_name(m: Mutant) -> str:
    """The key a mutated line belongs to when it is part of `key: type = Field(...)` in a class body (a bound on
    the continuation line names no key itself), else ''."""
    if m.module not in _FIELDS:
        tree = ast.parse((REPO / m.module).read_text())
        _FIELDS[m.module] = [(n.lineno, n.end_lineno or n.lineno, n.target.id) for n in ast.walk(tree)
                             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return next((name for first, last, name in _FIELDS[m.module] if first <= m.first_line <= last), "")


def select_tests(m: Mutant, cov: dict, budget: float, exclude: list[str],
                 new_tests: str = "") -> tuple[list[str], int, str]:
    """(node ids to run, how many cover the mutant, 'line'|'module'|'none')."""
    if m.module not in _REMAPPED:
        _REMAPPED[m.module] = remap(cov, m.module, (REPO / m.module).read_text())
    by_line = _REMAPPED[m.module]
    contexts, ran, at_import = set(), False, False
    for line in range(m.first_line, m.last_line + 1):
        found = by_line.get(str(line))
        if found is not None:
            ran = True
            at_import |= "" in found or not found
            contexts.update(c for c in found if c)
    how = "line"
    if ran and at_import:  # run at import time (a class body, a default, a decorator): whoever imports it
        contexts |= {c for found in by_line.values() for c in found if c}
        how = "module"
    contexts = {c for c in contexts if not any(fnmatch.fnmatch(c, pat) for pat in exclude)}
    if not contexts:
        return [], 0, "none"
    durations, failed = cov["durations"], set(cov["failed"])
    ordered = sorted((c.split("|")[0] for c in contexts if c.split("|")[0] not in failed),
                     key=lambda c: (durations.get(c, 60.0), c))
    ordered = list(dict.fromkeys(ordered))
    # Diverse first: one parametrization of each test function (fastest first), then a second of each, ...:
    # a schema line covered by 200 cases of one generated test still gets the other tests within the budget.
    rank, seen = {}, {}
    for t in ordered:
        fn = t.split("[")[0]
        seen[fn] = seen.get(fn, 0) + 1
        rank[t] = seen[fn]
    # A quick parametrization named after something on the mutated line (the config key, the method) first of
    # all. Quick only: a word such as `processes` also names an end-to-end run (`[kd-two_processes]`, 80 s),
    # which would spend the whole budget and leave the unit tests of the line unrun.
    words = {w for w in re.findall(r"[A-Za-z_]{3,}", m.before) if w not in ("Field", "description", "self", "int",
                                                                            "float", "str", "bool")}
    relevant = {t for t in ordered if "[" in t and durations.get(t, 60.0) <= RELEVANT_MAX_S
                and any(w in t.split("[", 1)[1] for w in words)}
    # Quicker still: the parametrizations of the very key (`[teacher.cache_topk=1]`), before the many that share
    # a word of its description with the line (`teacher` names hundreds).
    key = field_name(m)
    keyed = {t for t in ordered if key and "[" in t and durations.get(t, 60.0) <= RELEVANT_MAX_S
             and re.search(rf"(^|\.){re.escape(key)}(=|]$)", t.split("[", 1)[1])}
    ordered.sort(key=lambda t: (t not in keyed, t not in relevant, rank[t], durations.get(t, 60.0), t))
    chosen = []
    for group in (False, True):  # the budget holds for the older tests and for --new-tests each
        total = 0.0
        for test in (t for t in ordered if bool(new_tests and fnmatch.fnmatch(t, new_tests)) is group):
            if total and total + durations.get(test, 60.0) > budget:
                continue  # a slow test that does not fit: quicker ones further down still may
            chosen.append(test)
            total += durations.get(test, 60.0)
    return chosen, len(ordered), how


# ---------------------------------------------------------------- running
class Worker:
    def __init__(self, root: Path):
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "mutation_worker.py"), str(root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(root)})
        assert json.loads(self.proc.stdout.readline())["ready"]

    def run(self, module: str, source: str | None, tests: list[str], timeout: float) -> dict:
        self.proc.stdin.write(json.dumps({"file": module, "source": source, "tests": tests,
                                          "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def tests_key(tests: list[str]) -> str:
    files = sorted({t.split("::")[0] for t in tests})
    return sha(" ".join(tests) + "".join(sha((REPO / f).read_text()) for f in files if (REPO / f).is_file()))


def load_results() -> dict:
    path = STATE / "results.jsonl"
    results = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a run killed mid-write
                continue
            results[r["key"]] = r
    return results


def result_key(m: Mutant) -> str:
    return sha((REPO / m.module).read_text()) + f":{m.operator}:{m.occurrence}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--auto", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--module", action="append", default=[], help="module path or glob (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (scratch copies)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of recorded test time per mutant (fastest covering tests first)")
    parser.add_argument("--add-coverage", nargs="*", default=[],
                        help="test files written since the coverage pass: run them under coverage and merge them in")
    parser.add_argument("--fresh-coverage", action="store_true", help="redo the whole coverage pass")
    parser.add_argument("--exclude-tests", action="append", default=[],
                        help="never select tests matching this glob (e.g. 'tests/contracts/*': the score without them)")
    parser.add_argument("--new-tests", default="",
                        help="glob of tests added since a baseline (e.g. 'tests/contracts/*'): each mutant runs the older "
                             "tests first, then these, and the report gives the score before and after them")
    parser.add_argument("--sample", type=float, default=1.0,
                        help="run this fraction of each module's mutants (the same ones every time; a quick estimate)")
    parser.add_argument("--report", action="store_true", help="run nothing: the report of the results so far")
    parser.add_argument("--survivors", action="store_true",
                        help="rerun only the mutants whose latest result survived (after new tests)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--rerun", action="store_true", help="ignore the results of earlier runs")
    parser.add_argument("--write", default="", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    ensure_tools()
    from mutations import IGNORE, scratch_copy  # noqa: F401  (the hand-written set's scratch copies)
    from mutations_triage import EQUIVALENT

    modules = resolve_modules(args.module)
    mutants = [m for mod in modules for m in enumerate_mutants(mod)]
    if args.sample < 1:  # by a hash of the mutant's text, so that reruns and later runs pick the same ones
        mutants = [m for m in mutants if int(sha(m.triage_key + m.operator), 16) % 10000 < args.sample * 10000]
    if args.list:
        for m in mutants:
            print(f"{m.name}\t{m.function}\t{m.before} -> {m.after}")
        print(f"{len(mutants)} mutants in {len(modules)} modules")
        return
    cov = coverage_map(args.add_coverage, max(1, args.jobs), args.fresh_coverage)
    # Node ids as they are now: a test renamed or re-parametrized since the coverage pass is never selected.
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "-n", "0", "-m", ""], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.splitlines()
    valid = {line.strip() for line in collected if "::" in line}
    cov["failed"] = sorted(set(cov["failed"]) | {t for t in cov["durations"] if t not in valid})
    if cov["failed"]:
        print(f"[mutations] {len(cov['failed'])} test(s) failed in the coverage pass and are never selected: "
              f"{', '.join(cov['failed'][:10])}", flush=True)
    old = {} if args.rerun else load_results()
    STATE.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for m in mutants:
        key = result_key(m)
        if m.triage_key in EQUIVALENT:
            results[m.name] = {"status": "equivalent", "seconds": 0.0, "ran": 0, "covering": 0, "how": "",
                               "reason": EQUIVALENT[m.triage_key]}
            continue
        tests, covering, how = select_tests(m, cov, args.budget, args.exclude_tests, args.new_tests)
        if not tests:
            results[m.name] = {"status": "no coverage", "seconds": 0.0, "ran": 0, "covering": 0, "how": how}
            continue
        prior = old.get(key)
        if prior and prior["status"] != "STALE" and (prior.get("tests") == tests_key(tests)
                                                      or prior["status"] in ("killed", "timeout") and not args.new_tests):
            results[m.name] = prior
            continue
        if args.survivors and not (prior and prior["status"] in ("survived", "no coverage")):
            results[m.name] = prior if prior and prior["status"] != "STALE" else {
                "status": "not run", "seconds": 0.0, "ran": 0, "covering": covering, "how": how}
            continue
        if args.report:  # the latest result of this mutant, whatever tests it ran
            results[m.name] = prior if prior and prior["status"] != "STALE" else {
                "status": "not run", "seconds": 0.0, "ran": 0, "covering": covering, "how": how}
            continue
        todo.append((m, key, tests, covering, how))
    print(f"[mutations] {len(mutants)} mutants in {len(modules)} modules; {len(todo)} to run "
          f"({len(mutants) - len(todo)} known or not run), {args.jobs} job(s), load average {load_average():.2f}",
          flush=True)
    start = time.time()
    lock = threading.Lock()
    if todo:
        with tempfile.TemporaryDirectory(prefix="mutations-auto-") as tmp:
            workers: Queue = Queue()
            for j in range(max(1, args.jobs)):
                workers.put(Worker(scratch_copy(Path(tmp), f"copy{j}")))
            done = [0]

            def work(item):
                m, key, tests, covering, how = item
                worker = workers.get()
                try:
                    source = mutated_source(m)
                    older = [t for t in tests if not (args.new_tests and fnmatch.fnmatch(t, args.new_tests))]
                    newer = [t for t in tests if t not in older]
                    # Stages: the 3 fastest tests first (collecting few test files is most of a kill's cost),
                    # then the rest only if the mutant survived them; the --new-tests last.
                    r = {"status": "passed", "seconds": 0.0}
                    before = None
                    for stage in (older[:3], older[3:], "mark", newer):
                        if stage == "mark":
                            before = "killed" if r["status"] == "failed" else "timeout" if r["status"] == "timeout" \
                                else "survived" if older else "no coverage"
                            continue
                        if stage and r["status"] == "passed":
                            durations = sum(cov["durations"].get(t, 60.0) for t in stage)
                            seconds = r["seconds"]
                            r = worker.run(m.module, source, stage, timeout=max(120.0, 4 * durations + 60))
                            r["seconds"] += seconds
                finally:
                    workers.put(worker)
                status = {"failed": "killed", "passed": "survived", "timeout": "timeout",
                          "no tests": "STALE"}[r["status"]]
                record = {"key": key, "name": m.name, "status": status, "before": before, "seconds": r["seconds"],
                          "ran": len(tests),
                          "covering": covering, "how": how, "tests": tests_key(tests), "tail": r["tail"]}
                with lock:
                    results[m.name] = record
                    with open(STATE / "results.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    done[0] += 1
                    if status != "killed" or done[0] % 25 == 0:
                        print(f"[{done[0]}/{len(todo)}] {status:9s} {r['seconds']:5.1f}s {m.name}  "
                              f"{m.before} -> {m.after}", flush=True)

            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                list(pool.map(work, todo))
            while not workers.empty():
                workers.get().close()
    report = markdown_report(mutants, results, modules, time.time() - start, args)
    print(report)
    if args.write:
        Path(args.write).write_text(report)
    survivors = [m for m in mutants if results[m.name]["status"] in ("survived", "no coverage", "STALE")]
    sys.exit(1 if survivors else 0)


def markdown_report(mutants, results, modules, seconds, args) -> str:
    rows, total = [], {"killed": 0, "timeout": 0, "survived": 0, "no coverage": 0, "equivalent": 0, "before": 0}
    for mod in modules:
        mine = [results[m.name]["status"] for m in mutants if m.module == mod]
        counts = {s: mine.count(s) for s in total}
        for s in total:
            total[s] += counts[s] if s != "before" else 0
        scored = counts["killed"] + counts["timeout"] + counts["survived"] + counts["no coverage"]
        score = f"{100 * (counts['killed'] + counts['timeout']) / scored:.1f}%" if scored else "-"
        before = [results[m.name].get("before") for m in mutants if m.module == mod
                  and results[m.name]["status"] != "equivalent"]
        killed_before = sum(b in ("killed", "timeout") for b in before)
        total["before"] += killed_before
        rows.append([f"`{mod}`", len(mine), counts["killed"], counts["timeout"], counts["survived"],
                     counts["no coverage"], counts["equivalent"],
                     f"{100 * killed_before / scored:.1f}%" if scored and args.new_tests else "-", score])
    scored = total["killed"] + total["timeout"] + total["survived"] + total["no coverage"]
    rows.append(["**all**", len(mutants), total["killed"], total["timeout"], total["survived"], total["no coverage"],
                 total["equivalent"], f"{100 * total['before'] / max(1, scored):.1f}%" if args.new_tests else "-",
                 f"{100 * (total['killed'] + total['timeout']) / max(1, scored):.1f}%"])
    not_run = sum(results[m.name]["status"] == "not run" for m in mutants)
    lines = [markdown_table(["module", "mutants", "killed", "timeout", "survived", "not covered", "equivalent",
                             f"score without {args.new_tests or 'new tests'}", "score"], rows), "",
             f"{seconds:.0f} s for the mutants run now; score = (killed + timeout) / (killed + timeout + survived + "
             f"not covered); {not_run} mutants not run yet (counted in `mutants` only).", ""]
    surv = [m for m in mutants if results[m.name]["status"] in ("survived", "no coverage")]
    if surv:
        lines += ["Survivors:", "", markdown_table(
            ["mutant", "function", "change", "tests run / covering"],
            [[m.name, m.function or "(module)", f"`{m.before}` -> `{m.after}`",
              f"{results[m.name]['ran']} / {results[m.name]['covering']} ({results[m.name].get('how', '')})"]
             for m in surv]), ""]
    eq = [m for m in mutants if results[m.name]["status"] == "equivalent"]
    if eq:
        lines += ["Equivalent (excluded from the score):", "", markdown_table(
            ["mutant", "change", "why it cannot change a result"],
            [[m.name, f"`{m.before}` -> `{m.after}`", results[m.name]["reason"]] for m in eq]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
