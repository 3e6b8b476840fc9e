"""pytest plugin for ``make mutants`` (tools/mutants.py copies it into each work folder as its root
``conftest.py``): run each mutant's tests fastest first.

mutmut runs a mutant's tests with ``-x``, so a killed mutant costs the tests before the first one that
fails. Its fork mode sorts them by duration; its forkserver mode (the one this project needs, see
pyproject's ``process_isolation``) passes them in set order, so a mutant a 0.01 s test kills often ran
the 6 s bootstrap and sample-run tests first. During mutmut's stats pass (``MUTANT_UNDER_TEST=stats``)
this records each test's whole time (setup, call and teardown: the end-to-end tests do their work in
fixtures, which mutmut's own durations leave out) in ``test-durations.json`` beside it; in a mutant's
run it orders the collected tests by those times. Tests unknown to the file keep their place, last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DURATIONS = Path(__file__).resolve().parent / "test-durations.json"
_recorded: dict[str, float] = {}


def _mutant() -> str:
    return os.environ.get("MUTANT_UNDER_TEST", "")


def pytest_runtest_logreport(report) -> None:
    if _mutant() == "stats":
        _recorded[report.nodeid] = _recorded.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session) -> None:
    if _mutant() == "stats" and _recorded:
        # A later stats pass may run only the tests mutmut has not seen: keep the times of the others.
        known = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
        DURATIONS.write_text(json.dumps(known | _recorded, indent=1, sort_keys=True))


def pytest_collection_modifyitems(items) -> None:
    if _mutant() in ("", "stats") or not DURATIONS.is_file():
        return
    durations = json.loads(DURATIONS.read_text())
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))  # stable: unknown ones keep order
