"""The README is true: its Python example runs, and every command it lists has help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mnist_sweep.cli.main import COMMANDS, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_python_quick_start_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    import plotly.io as pio

    block = re.search(r"## Quick start in Python\n\n```python\n(.*?)```", README, re.S)
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
