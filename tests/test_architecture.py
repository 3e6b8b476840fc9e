"""The package's structure (docs/ARCHITECTURE.md): the layer contracts of `make lint` hold, and the import graph
they read holds every import statement of the package, those inside functions too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="the layer contracts need import-linter (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ssd_eval"


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("ssd_eval")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.AST, modules: set[str]) -> list[str]:
    """The ssd_eval modules one import statement names: ``from ssd_eval.engine import pipeline`` names the
    module ssd_eval.engine.pipeline, ``from ssd_eval.utils import now`` names ssd_eval.utils."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
        return [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names]
    return []


def test_the_graph_the_contracts_read_holds_every_import_inside_functions_too(graph):
    missing, inside_functions = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            for imported in imported_modules(node, graph.modules):
                inside_functions += id(node) not in top_level
                if not graph.direct_import_exists(importer=importer, imported=imported):
                    missing.append(f"{importer} -> {imported} (line {node.lineno})")
    assert not missing, missing
    assert inside_functions > 0  # the package has imports inside functions, and each one is in the graph


def test_the_layer_contracts_hold():
    # In a child process: import-linter's command line reconfigures logging, which would silence the
    # package's loggers for the tests that run after this one.
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_nothing_in_the_product_imports_its_test_helpers(graph):
    product = {module for module in graph.modules if not module.startswith("ssd_eval.testing")}
    users = {module for module in product if any(imported.startswith("ssd_eval.testing")
                                                 for imported in graph.find_modules_directly_imported_by(module))}
    assert users == set()


def test_every_ssd_eval_import_in_tools_and_scripts_resolves():
    """Scripts outside the package (tools/, including the shell scripts' embedded Python) name modules and
    functions that moved with the layers: each ``from ssd_eval... import ...`` they hold must import."""
    import importlib
    import re

    pattern = re.compile(r"^\s*from (ssd_eval[\w.]*) import ([\w, ]+?)\s*(?:#.*)?$", re.M)
    found = []
    for path in sorted((ROOT / "tools").rglob("*")):
        if path.suffix in (".py", ".sh") and path.is_file():
            found += [(path.name, module, name.strip()) for module, names in pattern.findall(path.read_text())
                      for name in names.split(",") if name.strip()]
    assert found, "no ssd_eval imports found in tools/: the pattern is wrong"
    missing = [f"{script}: {module}.{name}" for script, module, name in found
               if not hasattr(importlib.import_module(module), name)]
    assert not missing
