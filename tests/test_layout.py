"""The package's layout holds: each group imports only groups below it, and the light groups load no Keras."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "mnist_sweep"

#: The groups bottom up (docs/architecture.md draws them); a group imports only groups on lower floors.
FLOORS: dict[str, int] = {
    "_base": 1, "sweep": 2, "data": 3, "model": 3, "storage": 3, "search": 4,
    "results": 5, "final": 5, "bench": 6, "cli": 8,
}
PUBLIC_API_FLOOR = 7  # mnist_sweep/__init__.py: above every group but the command line
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "version.py"}


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _group_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mnist_sweep" and parts[1] in FLOORS else None


def test_every_module_lives_in_a_known_group() -> None:
    groups = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert groups == set(FLOORS), "a new group needs a floor here and a line in docs/architecture.md"
    assert {p.name for p in PACKAGE.glob("*.py")} == TOP_LEVEL


@pytest.mark.parametrize("group", sorted(FLOORS))
def test_a_group_imports_only_groups_below_it(group: str) -> None:
    upward = []
    for path in sorted((PACKAGE / group).rglob("*.py")):
        for module in _imported_modules(path):
            other = _group_of(module)
            floor = PUBLIC_API_FLOOR if module == "mnist_sweep" else FLOORS.get(other or "", 0)
            if other != group and floor >= FLOORS[group]:
                upward.append(f"{path.relative_to(REPO)} imports {module}")
    assert not upward, "\n".join(upward)


def test_the_public_api_names_resolve_into_the_groups() -> None:
    import mnist_sweep as ms

    for name in ms.__all__:
        value = getattr(ms, name)
        if not callable(value):
            continue  # constants (__version__, exit codes) have no home module to check
        home = value.__module__
        assert _group_of(home) or home == "mnist_sweep.errors", f"{name} is defined in {home}"


@pytest.mark.parametrize("module", ["mnist_sweep", "mnist_sweep.sweep", "mnist_sweep.search", "mnist_sweep.data",
                                    "mnist_sweep.storage", "mnist_sweep.model"])
def test_importing_a_light_group_loads_no_keras(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('keras', 'tensorflow', 'plotly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import {module} loaded {out.strip()}"
