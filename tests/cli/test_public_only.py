"""The command line is a thin layer over the public API: it imports no module of the package but
``mnist_sweep`` itself (and its own ``mnist_sweep.cli``), and uses only the names ``mnist_sweep``
exports; exit codes come from the errors, never restated."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mnist_sweep as ms

PACKAGE = Path(ms.__file__).parent
CLI_FILES = sorted((PACKAGE / "cli").glob("*.py")) + [PACKAGE / "__main__.py"]
ALLOWED_MODULES = ("mnist_sweep", "mnist_sweep.version")  # and mnist_sweep.cli.*


def _module_of(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = ["mnist_sweep", *path.relative_to(PACKAGE).parent.parts]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(path: Path, source: str | None = None) -> list[str]:
    """What ``path`` (or ``source``, read as if it were that file) uses of the package beyond its public names."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    public, found, aliases = set(ms.__all__), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "mnist_sweep":
                    aliases.add(alias.asname or alias.name)
                elif alias.name.startswith("mnist_sweep.") and not _allowed(alias.name):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = _module_of(path, node)
            if module == "mnist_sweep":
                found += [f"from mnist_sweep import {a.name}" for a in node.names if a.name not in public]
            elif module.startswith("mnist_sweep.") and not _allowed(module):
                found.append(f"from {module} import ...")
    for node in ast.walk(tree):  # ms.NAME, where ms is `import mnist_sweep as ms`
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr not in public:
                found.append(f"{node.value.id}.{node.attr}")
    return found


def _allowed(module: str) -> bool:
    return module in ALLOWED_MODULES or module == "mnist_sweep.cli" or module.startswith("mnist_sweep.cli.")


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_the_command_line_uses_only_public_names(path: Path) -> None:
    assert private_uses(path) == []


def test_the_check_sees_private_imports_anywhere() -> None:
    main = PACKAGE / "cli" / "main.py"
    source = (
        "import mnist_sweep as ms\n"
        "from mnist_sweep import run, _API\n"
        "from mnist_sweep.search.study import run_sweep\n"
        "def f():\n"
        "    import mnist_sweep.storage.rdb\n"
        "    from ..errors import InputError\n"
        "    from . import args\n"
        "    return ms.run, ms.Objective\n"
    )
    assert private_uses(main, source) == [
        "from mnist_sweep import _API",
        "from mnist_sweep.search.study import ...",
        "import mnist_sweep.storage.rdb",
        "from mnist_sweep.errors import ...",
        "ms.Objective",
    ]


def test_the_command_line_states_no_exit_code_but_zero() -> None:
    # each error carries its exit_code (mnist_sweep.errors); the commands return that, or 0
    for path in CLI_FILES:
        numbers = [node.value.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)
                   and isinstance(node.value.value, int) and not isinstance(node.value.value, bool)]
        assert set(numbers) <= {0}, (path.name, numbers)
    codes = {ms.InputError.exit_code, ms.SweepFailed.exit_code, ms.StorageUnavailable.exit_code,
             ms.EXIT_INTERRUPTED, ms.EXIT_TERMINATED}
    assert len(codes) == 5 and 0 not in codes
    assert ms.SweepInterrupted("x", signal=15).exit_code == ms.EXIT_TERMINATED == 143
    assert ms.SweepInterrupted("x").exit_code == ms.EXIT_INTERRUPTED == 130
