"""tools/mutants.py and tools/mutmut_order.py (``make mutants``): the parts that decide which tests run
against a mutant, and in which order, tested without running mutmut."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mutants = load_tool("mutants")
order = load_tool("mutmut_order")


def test_shared_fixture_users_follow_fixtures_that_request_a_shared_one():
    source = '''
import pytest

@pytest.fixture(scope="module")
def run(tmp_path_factory): ...

@pytest.fixture
def result(run): ...

@pytest.fixture(scope="function")
def own(tmp_path): ...

def test_direct(run): ...
def test_through_a_fixture(result): ...
def test_function_scoped(own): ...
def test_plain(): ...
'''
    assert mutants.shared_fixture_users(source) == {"test_direct", "test_through_a_fixture"}


def test_each_module_runs_with_its_own_settings_and_the_ordering_plugin():
    text = mutants.mutmut_section({"also_copy": ["data/"], "timeout_constant": 20.0}, "gate",
                                  ["tests/test_gate.py"])
    settings = tomllib.loads(text)["tool"]["mutmut"]
    assert settings == {"also_copy": ["data/", "conftest.py"], "timeout_constant": 20.0,
                        "only_mutate": ["ssd_eval/reports/gate.py"],
                        "pytest_add_cli_args_test_selection": ["tests/test_gate.py"]}


def test_the_core_modules_and_their_test_files_exist():
    assert set(mutants.CORE) <= set(mutants.MODULES)
    assert len(mutants.CORE) == 10  # issue 15's nine; pipeline split in two (engine/prefetch.py) in 0.2
    for module, tests in mutants.MODULES.items():
        assert (REPO / "ssd_eval" / f"{mutants.PATHS[module]}.py").is_file()
        assert all((REPO / t).is_file() for t in tests), module


def item(nodeid: str):
    return SimpleNamespace(nodeid=nodeid)


def test_the_stats_pass_records_whole_test_times_and_a_mutant_runs_the_fastest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(order, "DURATIONS", tmp_path / "test-durations.json")
    monkeypatch.setattr(order, "_recorded", {})
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    for nodeid, phase_seconds in [("t::slow", (5.0, 0.5, 0.1)), ("t::fast", (0.0, 0.2, 0.0)),
                                  ("t::middle", (0.0, 1.0, 0.0))]:
        for seconds in phase_seconds:  # setup, call, teardown: all three count
            order.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, duration=seconds))
    order.pytest_sessionfinish(None)
    assert json.loads((tmp_path / "test-durations.json").read_text()) == pytest.approx(
        {"t::slow": 5.6, "t::fast": 0.2, "t::middle": 1.0})

    collected = [item("t::slow"), item("t::new"), item("t::middle"), item("t::newer"), item("t::fast")]
    monkeypatch.setenv("MUTANT_UNDER_TEST", "ssd_eval.reports.gate.x_run_gate__mutmut_1")
    order.pytest_collection_modifyitems(collected)
    assert [i.nodeid for i in collected] == ["t::fast", "t::middle", "t::slow", "t::new", "t::newer"]


@pytest.mark.parametrize("mutant", ["", "stats"])
def test_outside_a_mutant_run_the_order_is_left_alone(tmp_path, monkeypatch, mutant):
    monkeypatch.setattr(order, "DURATIONS", tmp_path / "test-durations.json")
    (tmp_path / "test-durations.json").write_text(json.dumps({"t::b": 0.1, "t::a": 9.0}))
    monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
    collected = [item("t::a"), item("t::b")]
    order.pytest_collection_modifyitems(collected)
    assert [i.nodeid for i in collected] == ["t::a", "t::b"]


def test_pytest_loads_the_plugin_as_a_root_conftest_and_orders_a_mutants_run(tmp_path):
    """The plugin as mutmut's work folder holds it: the stats pass writes the times, a mutant's run (two test
    files, their tests interleaved by time) goes fastest first, and a later stats pass keeps earlier times."""
    import os
    import shutil
    import subprocess
    import sys

    shutil.copy2(REPO / "tools" / "mutmut_order.py", tmp_path / "conftest.py")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import time\n\ndef test_slow():\n    time.sleep(0.3)\n\ndef test_fast():\n    pass\n")
    (tmp_path / "tests" / "test_b.py").write_text(
        "import time\n\ndef test_middle():\n    time.sleep(0.1)\n")

    def run(mutant: str, *args: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "MUTANT_UNDER_TEST"} | {"MUTANT_UNDER_TEST": mutant}
        done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", ".",
                               *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return [line.split(" ")[0] for line in done.stdout.splitlines() if " PASSED" in line]

    assert run("stats", "tests") == ["tests/test_a.py::test_slow", "tests/test_a.py::test_fast",
                                     "tests/test_b.py::test_middle"]
    assert set(json.loads((tmp_path / "test-durations.json").read_text())) == {
        "tests/test_a.py::test_slow", "tests/test_a.py::test_fast", "tests/test_b.py::test_middle"}
    assert run("ssd_eval.m.x_f__mutmut_1", "tests") == [
        "tests/test_a.py::test_fast", "tests/test_b.py::test_middle", "tests/test_a.py::test_slow"]
    run("stats", "tests/test_b.py")  # a second stats pass over some tests only
    assert len(json.loads((tmp_path / "test-durations.json").read_text())) == 3


def test_collect_counts_kills_timeouts_and_crashes_and_lists_every_other_mutant(tmp_path, monkeypatch):
    meta = tmp_path / "mutants" / "ssd_eval" / "inference" / "runner.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"m__mutmut_1": 1, "m__mutmut_2": 0, "m__mutmut_3": -6, "m__mutmut_4": -24, "m__mutmut_5": 34,
             "m__mutmut_6": 5, "m__mutmut_7": -11, "m__mutmut_10": 0}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    shown = []
    monkeypatch.setattr(mutants.subprocess, "run",
                        lambda args, **kw: shown.append(args[-1]) or SimpleNamespace(stdout=f"# {args[-1]}\n-a\n+b\n"))
    result = mutants.collect(tmp_path, "runner")
    assert result["counts"] == {"killed": 1, "survived": 2, "crashed": 2, "timeout": 1, "skipped": 1, "no tests": 1}
    assert (result["total"], result["killed"]) == (8, 4)
    assert result["score"] == pytest.approx(100 * 4 / 7)  # a skipped mutant is left out
    assert [s["name"] for s in result["survivors"]] == shown == ["m__mutmut_2", "m__mutmut_5", "m__mutmut_6",
                                                                 "m__mutmut_10"]  # natural order: 10 after 6
    result["minutes"] = 1.3
    table = mutants.render([result], "## header").splitlines()
    assert table[2:5] == [
        "| module | killed | crashed | timeout | survived | no tests | other | total | score | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| runner | 1 | 2 | 1 | 2 | 1 | 1 | 8 | 57.1 % | 1.3 |"]
    assert result["survivors"][0] == {"name": "m__mutmut_2", "status": "survived", "diff": "-a\n+b"}
