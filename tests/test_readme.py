"""The README is true: its Python example runs, every command it shows parses, every command has help,
every name and path it gives exists, and it stays a README for users (short, no path outside the repository)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml
from helpers import REPO

import mnist_sweep as ms
from mnist_sweep.cli.args import build_parser
from mnist_sweep.cli.main import COMMANDS, main

README = (REPO / "README.md").read_text()
DOCS = ["architecture.md", "performance.md", "parallel.md", "decisions.md", "storage-scaling.md"]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.S | re.M)


def _section(title: str) -> str:
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert found, f"README has no section '{title}'"
    return found[1]


def _cli_lines() -> list[list[str]]:
    """Every `python -m mnist_sweep ...` or `mnist-sweep ...` line of the README's shell blocks, as argv."""
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == ["python", "-m", "mnist_sweep"]:
                lines.append(words[3:])
            elif words[:1] == ["mnist-sweep"]:
                lines.append(words[1:])
    return lines


def test_the_python_quick_start_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    import plotly.io as pio

    block = re.search(r"### In Python\n\n```python\n(.*?)```", _section("Quick start"), re.S)
    assert block, "README has no Python quick start"
    monkeypatch.chdir(tmp_path)  # it writes studies/ where it runs
    monkeypatch.setattr(pio.renderers, "default", "json")  # .show() prints instead of opening a browser
    namespace: dict = {}
    exec(compile(block[1], "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert len(namespace["study"].trials) == 6
    assert 0.8 < namespace["final"].test_accuracy <= 1.0
    assert (tmp_path / "studies" / "quick" / "model.keras").is_file()
    assert "Prediction(label='7', index=7" in capsys.readouterr().out  # the first test digit is a 7


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_documented_and_has_help(command: str, capsys) -> None:
    assert f"mnist_sweep {command}" in README or f"`{command} " in README, command
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out


def test_every_command_line_the_readme_shows_parses() -> None:
    lines = _cli_lines()
    assert len(lines) >= 10, lines  # the quick start, results, final model and workers show commands
    parser = build_parser()
    for argv in lines:
        args = parser.parse_args(argv)  # a wrong command or option exits 2 here
        assert args.command in COMMANDS, argv


def test_the_shell_quick_start_is_what_a_newcomer_types() -> None:
    shell = re.search(r"### In the shell\n\n```bash\n(.*?)```", _section("Quick start"), re.S)
    assert shell and "python -m mnist_sweep run quick" in shell[1]
    assert re.search(r"^pip install \.\s", _section("Install"), re.M), "the plain install from a clone"


def test_every_module_the_readme_runs_exists() -> None:
    modules = re.findall(r"python -m ([\w.]+)", README)
    assert modules
    for module in set(modules):
        assert importlib.util.find_spec(module) is not None, module


def test_the_python_examples_use_only_real_names() -> None:
    for block in _blocks("python"):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_sweep"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ms":
                assert node.attr in ms.__all__, f"ms.{node.attr} is not public"


def test_the_api_table_names_only_public_names() -> None:
    rows = [line for line in _section("The Python API").splitlines() if line.startswith("| `")]
    names = {m for row in rows for m in re.findall(r"`(\w+)[(`]", row.split(" | ")[0])}
    assert len(names) >= 15, names
    assert names <= set(ms.__all__), sorted(names - set(ms.__all__))


def test_the_yaml_example_is_a_valid_space() -> None:
    for block in _blocks("yaml"):
        ms.sweep_from_dict({"trials": 1, **yaml.safe_load(block)}, name="readme")  # raises InputError if not


def test_the_exit_codes_are_the_errors_own() -> None:
    from mnist_sweep.errors import InputError, StorageUnavailable, SweepFailed

    table = _section("Run, resume, exit codes")
    for error in (InputError, SweepFailed, StorageUnavailable):
        assert re.search(rf"^\| {error.exit_code} \|", table, re.M), error.__name__
    assert re.search(r"^\| 130 / 143 \|", table, re.M)


def test_every_repository_path_the_readme_names_exists() -> None:
    paths = re.findall(r"`((?:mnist_sweep|docs|deploy|examples|sweeps|tests)/[\w./-]*)`", README)
    paths += re.findall(r"\]\(((?:docs|examples)/[\w./-]+)\)", README)  # images and links
    paths += re.findall(r"\b(docs/[\w-]+\.md)\b", README)
    assert len(paths) >= 8, paths
    for path in set(paths):
        assert (REPO / path).exists(), path


def test_the_readme_is_a_readme_for_users() -> None:
    lines = README.splitlines()
    assert len(lines) <= 400, f"README.md has {len(lines)} lines: measurement logs belong in docs/"
    long = [n for n, line in enumerate(lines, 1) if len(line) > 200]
    assert not long, f"lines over 200 characters: {long}"
    assert "../" not in README, "README names a path outside the repository"
    for doc in DOCS:
        assert f"docs/{doc}" in README, doc


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_name_no_path_outside_the_repository_and_no_stale_module(doc: str) -> None:
    text = (REPO / "docs" / doc).read_text()
    assert "../shared" not in text
    for path in re.findall(r"`((?:mnist_sweep|tests)/[\w/]+\.py)`", text):
        assert (REPO / path).exists(), f"docs/{doc} names {path}"
