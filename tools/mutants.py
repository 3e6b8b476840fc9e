"""Mutation testing of the core modules with mutmut 3, one module at a time (``make mutants``).

    .venv/bin/python tools/mutants.py                      # the core modules (CORE), in that order
    .venv/bin/python tools/mutants.py preprocess metrics   # only these
    .venv/bin/python tools/mutants.py --list               # the modules and their test files

For each module it builds a fresh work folder outside the checkout (``--workdir``, default
``$TMPDIR/ssd_eval-mutants/<module>``) holding the package, the tests and the data they read, with
pyproject.toml's ``[tool.mutmut]`` settings plus ``only_mutate`` (this module) and
``pytest_add_cli_args_test_selection`` (the module's test files below), and runs ``mutmut run`` there.
mutmut then runs, for each mutant, only those of the selected tests that call the mutated function
(``-x``: the first failure kills it); where one of them uses a module- or session-scoped fixture, also
the file's other tests that use it (``widen_test_map``). The checkout is never written to, so it can be
edited meanwhile.

Prints killed / crashed / timeout / survived / no tests / total and the score per module, every survivor's
diff, and writes the same as Markdown (``--report``, default ``<workdir>/report.md``) and JSON
(``<workdir>/report.json``). Score = (killed + timeout + crashed) / (total - skipped), "crashed" being
a test process ended by SIGABRT or SIGSEGV; a mutant no selected test reaches ("no tests") counts as a
survivor. Exit 1 when a module scores under ``--min-score``.
Not part of ``make test`` or CI: docs/TESTING.md has the last results and why each survivor is harmless.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module -> its file under ssd_eval/ (docs/ARCHITECTURE.md).
PATHS = {"preprocess": "inference/preprocess", "postprocess": "inference/postprocess", "compare": "results/compare",
         "cocoeval": "scoring/cocoeval", "metrics": "scoring/metrics", "result": "results/result",
         "table": "reports/table", "gate": "reports/gate", "cache": "engine/cache", "coco": "data/coco",
         "runner": "inference/runner", "pipeline": "engine/pipeline", "prefetch": "engine/prefetch"}

# module -> the test files that cover it (paths relative to the repository root). Smallest first.
MODULES: dict[str, list[str]] = {
    "preprocess": ["tests/test_preprocess.py", "tests/test_faults_preprocess.py", "tests/test_levers.py"],
    "postprocess": ["tests/test_postprocess.py", "tests/test_faults_config.py"],
    "compare": ["tests/test_compare.py", "tests/test_table.py", "tests/test_gate.py", "tests/test_faults_gate.py"],
    "cocoeval": ["tests/test_metrics.py", "tests/test_faults_scoring.py", "tests/test_streaming.py"],
    "metrics": ["tests/test_metrics.py", "tests/test_streaming.py"],
    "result": ["tests/test_results.py", "tests/test_table.py", "tests/test_gate.py", "tests/test_faults_gate.py",
                "tests/test_cli.py"],
    "table": ["tests/test_table.py", "tests/test_faults_gate.py"],
    "gate": ["tests/test_gate.py", "tests/test_faults_gate.py"],
    # tests/test_faults_pipeline.py (sample runs) killed no cache mutant that test_cache.py does not (measured
    # 2026-11-26: the same 24 survivors either way); without it cache takes 3 minutes instead of 20.
    "cache": ["tests/test_cache.py"],
    "coco": ["tests/test_data.py", "tests/test_faults_preprocess.py"],
    "runner": ["tests/test_runner.py", "tests/test_faults_config.py"],
    # test_faults_preprocess.py: the config's preprocessing reaching the workers (PreprocessParams.from_config).
    "pipeline": ["tests/test_pipeline.py", "tests/test_faults_pipeline.py", "tests/test_faults_config.py",
                 "tests/test_faults_scoring.py", "tests/test_faults_preprocess.py"],
    # The decode pool and input ring left pipeline.py in 0.2 (engine/prefetch.py); the same tests cover it.
    "prefetch": ["tests/test_pipeline.py", "tests/test_faults_pipeline.py", "tests/test_faults_config.py",
                 "tests/test_faults_preprocess.py", "tests/test_stages.py"],
}

# `make mutants` without MODULES: the core modules of issue 15, pipeline in two since 0.2
# (compare, result and metrics run when named).
CORE = ["preprocess", "postprocess", "cocoeval", "table", "gate", "cache", "coco", "runner", "pipeline", "prefetch"]

# What each work folder holds besides the package (mutmut copies these on into its mutants/ folder).
# The Makefile: tests/test_gate.py runs `make ci-gate` (in a subprocess, on the work folder's copy).
COPIED = ["ssd_eval", "tests", "data", "configs", "baselines", "subsets", "pyproject.toml", "Makefile"]
KILLED = ("killed", "timeout", "caught by type check", "crashed")
# A mutant whose tests end the test process with SIGABRT or SIGSEGV (e.g. onnxruntime aborting on
# ``add_session_config_entry(None, ...)``) fails the suite as surely as a failing assertion; mutmut 3
# files -6 under "suspicious" (any exit code outside its table) and -11 under "segfault".
CRASH_EXIT_CODES = (-6, -11, 134, 139)


def mutmut_section(base: dict, module: str, tests: list[str]) -> str:
    """pyproject's [tool.mutmut] settings for one module, as TOML text."""
    settings = dict(base)
    settings["only_mutate"] = [f"ssd_eval/{PATHS[module]}.py"]
    settings["pytest_add_cli_args_test_selection"] = list(tests)
    settings["also_copy"] = list(settings.get("also_copy", [])) + ["conftest.py"]  # the ordering plugin
    lines = ["[tool.mutmut]"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")  # strings, numbers, booleans, lists of them: JSON is TOML
    return "\n".join(lines) + "\n"


def copy_checkout(dest: Path) -> None:
    """A fresh copy of the package, its tests and the data they read (``COPIED``) in ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, dest / name)


def link_shared(folder: Path) -> None:
    """tests/conftest.py finds the real COCO subset beside the checkout (``ROOT.parent / "shared"``): link it
    into ``folder``, the parent of the tests' root in a copy, when the checkout has one."""
    shared, link = REPO.parent / "shared", folder / "shared"
    if shared.is_dir() and not link.exists():
        link.symlink_to(shared)


def prepare(workdir: Path, module: str, tests: list[str]) -> None:
    """A fresh copy of what the module's tests need, with the module's mutmut settings."""
    copy_checkout(workdir)
    text = (REPO / "pyproject.toml").read_text()
    base = tomllib.loads(text).get("tool", {}).get("mutmut", {})
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)  # drop the section, then write ours
    (workdir / "pyproject.toml").write_text(text.rstrip() + "\n\n" + mutmut_section(base, module, tests))
    # Fastest tests first in each mutant's run (tools/mutmut_order.py; mutmut's forkserver mode does not).
    if (REPO / "conftest.py").exists():
        raise SystemExit(f"{REPO / 'conftest.py'} exists: tools/mutants.py would replace it with tools/mutmut_order.py")
    shutil.copy2(REPO / "tools" / "mutmut_order.py", workdir / "conftest.py")
    link_shared(workdir)  # mutmut runs the tests from <workdir>/mutants: the subset is <workdir>/shared


def run_mutmut(workdir: Path, module: str, max_children: int) -> int:
    """``mutmut run`` in the work folder (progress output into mutmut.log), after widening its test map."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    with open(workdir / "mutmut.log", "w") as log:
        # First only the stats: a mutant name that matches nothing makes mutmut stop once it has mapped
        # each function to the tests that call it (mutants/mutmut-stats.json).
        dotted = PATHS[module].replace("/", ".")
        subprocess.run([sys.executable, "-m", "mutmut", "run", f"ssd_eval.{dotted}.no_such_mutant"],
                       cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        widened = widen_test_map(workdir)
        print(f"   widened the test map of {widened} functions to the other tests using their shared fixtures",
              file=log, flush=True)
        return subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
                              cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


SHARED_SCOPES = {"class", "module", "package", "session"}


def shared_fixture_users(source: str) -> set[str]:
    """The test functions of a test file that use (directly, or through the file's other fixtures) a fixture
    with a class/module/package/session scope defined in the file."""
    tree = ast.parse(source)
    fixtures: dict[str, tuple[bool, set[str]]] = {}  # name -> (shared scope, the fixtures it requests)
    tests: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        params = {a.arg for a in node.args.args + node.args.kwonlyargs}
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if ast.unparse(target) in ("pytest.fixture", "fixture"):
                scope = next((k.value for k in (call.keywords if call else []) if k.arg == "scope"), None)
                shared = isinstance(scope, ast.Constant) and scope.value in SHARED_SCOPES
                fixtures[node.name] = (shared, params)
                break
        else:
            if node.name.startswith("test"):
                tests[node.name] = params
    shared = {name for name, (is_shared, _) in fixtures.items() if is_shared}
    grew = True
    while grew:  # fixtures that request a shared fixture carry its value too
        more = {name for name, (_, params) in fixtures.items() if params & shared} - shared
        shared |= more
        grew = bool(more)
    return {name for name, params in tests.items() if params & shared}


def widen_test_map(workdir: Path) -> int:
    """mutmut runs a mutant against the tests during which the mutated function ran. A module-scoped
    fixture runs once, inside the first test that uses it, so the other tests reading its value (e.g.
    test_faults_scoring's PR curves) would never see the mutant. A function reached by a test that uses
    such a fixture is given every test of that file that uses it. Returns how many functions gained tests."""
    path = workdir / "mutants" / "mutmut-stats.json"
    if not path.is_file():
        return 0
    stats = json.loads(path.read_text())
    users: dict[str, set[str]] = {}  # test file -> node ids of its tests that use a shared fixture
    for test in stats["duration_by_test"]:  # every test the stats run ran
        file = test.split("::")[0]
        source = workdir / "mutants" / file
        if file not in users:
            users[file] = set()
            names = shared_fixture_users(source.read_text()) if source.is_file() else set()
            users[file] = {t for t in stats["duration_by_test"]
                           if t.split("::")[0] == file and t.split("::")[-1].split("[")[0] in names}
    widened = 0
    for function, tests in stats["tests_by_mangled_function_name"].items():
        extra = set()
        for test in tests:
            group = users.get(test.split("::")[0], set())
            if test in group:
                extra |= group
        extra -= set(tests)
        if extra:
            stats["tests_by_mangled_function_name"][function] = sorted(set(tests) | extra)
            widened += 1
    path.write_text(json.dumps(stats, indent=4))
    return widened


def collect(workdir: Path, module: str) -> dict:
    """Counts per status and every mutant that was not killed, with its diff."""
    from mutmut.stats import status_by_exit_code

    meta = workdir / "mutants" / "ssd_eval" / f"{PATHS[module]}.py.meta"
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
    counts: dict[str, int] = {}
    survivors = []
    for name, code in sorted(exit_codes.items(), key=lambda item: natural_key(item[0])):
        status = "crashed" if code in CRASH_EXIT_CODES else status_by_exit_code[code]
        counts[status] = counts.get(status, 0) + 1
        if status not in KILLED:
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=workdir,
                                  capture_output=True, text=True).stdout
            survivors.append({"name": name, "status": status, "diff": strip_header(diff)})
    total = sum(counts.values())
    scored = total - counts.get("skipped", 0)
    killed = sum(counts.get(status, 0) for status in KILLED)
    return {"module": module, "counts": counts, "total": total, "killed": killed,
            "score": 100.0 * killed / scored if scored else None, "survivors": survivors}


def natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def strip_header(diff: str) -> str:
    """The diff without mutmut's ``# name: status`` line and the file header."""
    return "\n".join(line for line in diff.splitlines()
                     if not line.startswith(("# ", "--- ", "+++ "))).strip("\n")


def render(results: list[dict], header: str) -> str:
    shown = ("killed", "crashed", "timeout", "survived", "no tests")
    out = [header, "", "| module | " + " | ".join(shown) + " | other | total | score | minutes |",
           "|---|" + "---:|" * (len(shown) + 4)]
    for r in results:
        c = r["counts"]
        other = r["total"] - sum(c.get(s, 0) for s in shown)
        score = "n/a" if r["score"] is None else f"{r['score']:.1f} %"
        out.append(f"| {r['module']} | " + " | ".join(str(c.get(s, 0)) for s in shown)
                   + f" | {other} | {r['total']} | {score} | {r['minutes']:.1f} |")
    for r in results:
        if r["survivors"]:
            out += ["", f"### {r['module']}: {len(r['survivors'])} not killed", ""]
            for s in r["survivors"]:
                out += [f"`{s['name']}` ({s['status']})", "```diff", s["diff"], "```"]
    return "\n".join(out) + "\n"


def report_header(args: argparse.Namespace) -> str:
    versions = f"mutmut {metadata.version('mutmut')}, Python {sys.version.split()[0]}"
    return f"## Mutation testing ({versions}, --max-children {args.max_children})"


def write_report(results: list[dict], args: argparse.Namespace) -> None:
    path = args.report or args.workdir / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, report_header(args)))
    path.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: {', '.join(CORE)} (any of {', '.join(MODULES)})")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ssd_eval-mutants")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default 2)")
    parser.add_argument("--report", type=Path, help="Markdown report (default <workdir>/report.md)")
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 when a module scores lower")
    parser.add_argument("--list", action="store_true", help="print the modules and their test files")
    args = parser.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module:12} {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    try:
        metadata.version("mutmut")
    except metadata.PackageNotFoundError:
        print("mutmut is not installed: .venv/bin/pip install -e '.[dev]' (or pip install -r requirements-dev.lock)")
        return 2
    modules = args.modules or list(CORE)
    missing = [t for m in modules for t in MODULES[m] if not (REPO / t).is_file()]
    if missing:
        print(f"no {', '.join(missing)} in {REPO}: update MODULES in tools/mutants.py")
        return 2
    results = []
    for module in modules:
        workdir = args.workdir.resolve() / module
        print(f"== {module}: mutating ssd_eval/{PATHS[module]}.py against {' '.join(MODULES[module])} (in {workdir})",
              flush=True)
        start = time.monotonic()
        prepare(workdir, module, MODULES[module])
        code = run_mutmut(workdir, module, args.max_children)
        result = collect(workdir, module)
        result["minutes"] = (time.monotonic() - start) / 60
        result["mutmut_exit"] = code
        if code != 0 or not result["total"]:
            print(f"   mutmut exited {code}; see {workdir / 'mutmut.log'}", flush=True)
        score = "n/a" if result["score"] is None else f"{result['score']:.1f} %"
        print(f"   {result['killed']}/{result['total']} killed ({score}), {json.dumps(result['counts'])}, "
              f"{result['minutes']:.1f} min", flush=True)
        results.append(result)
        write_report(results, args)  # after each module, so an interrupted run keeps what it finished

    print("\n" + render(results, report_header(args)))
    print(f"report: {args.report or args.workdir / 'report.md'} (and .json)")
    low = [r["module"] for r in results if r["score"] is None or r["score"] < args.min_score]
    if low:
        print(f"under {args.min_score:g} %: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
