"""Every notebook in examples/ runs top to bottom in a fresh ``python3`` kernel (nbclient).

Each notebook is copied into pytest's ``tmp_path`` and executed there, so whatever it writes
(study databases, reports, models) stays out of the repository. The tutorial notebook takes about
15 seconds on 2 CPU cores (a shrunk sweep: 6 trials of 2-4 epochs on 6,000 images).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _execute(notebook: Path, folder: Path) -> Any:
    """Run a copy of ``notebook`` in ``folder``; returns the executed notebook.

    A first cell is added that prints the kernel's ``sys.prefix``: the ``python3`` kernelspec must be
    this interpreter's (the one with mnist_sweep installed), not some other Python's.
    """
    copy = folder / notebook.name
    shutil.copyfile(notebook, copy)
    nb = nbformat.read(copy, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    kernel_prefix = _stdout(nb.cells.pop(0)).strip()
    assert Path(kernel_prefix).resolve() == Path(sys.prefix).resolve(), (
        f"the python3 kernel runs {kernel_prefix}, not this interpreter's {sys.prefix}")
    return nb


def _stdout(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.output_type == "stream" and o.name == "stdout")


def _plotly_outputs(nb: Any) -> list[Any]:
    """Figures drawn: plotly's JSON (the default renderer in a kernel) or its HTML (``"notebook"``)."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result")
            and (PLOTLY_MIME in o.data or "plotly" in str(o.data.get("text/html", "")))]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(notebook: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in EXAMPLES.iterdir())
    nb = _execute(notebook, tmp_path)
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before, f"{notebook.name} wrote into examples/"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{notebook.name}: no code cells"
    assert all(c.execution_count is not None for c in code), f"{notebook.name}: a cell did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{notebook.name}: {errors[0].ename}: {errors[0].evalue}"
    if notebook.name == "tutorial.ipynb":
        _check_tutorial(nb, tmp_path)


def _check_tutorial(nb: Any, folder: Path) -> None:
    printed = "\n".join(_stdout(c) for c in nb.cells if c.cell_type == "code")

    assert "target 6 trials" in printed, "the sweep did not run the shrunk 6-trial tutorial sweep"
    assert "6/6 trial" in printed, f"the sweep did not reach its 6 trials:\n{printed[-2000:]}"

    accuracies = re.findall(r"test accuracy: (\d\.\d+)", printed)
    assert len(accuracies) == 1, "the notebook should print the final model's test accuracy once"
    assert float(accuracies[0]) > 0.8, f"test accuracy {accuracies[0]}: the final model did not learn"

    predictions = re.findall(r"predicted (\d) \(\s*[\d.]+%\), true (\d)", printed)
    assert len(predictions) == 8, predictions
    correct = sum(p == t for p, t in predictions)
    assert correct >= 6, f"only {correct} of the 8 test digits classified correctly: {predictions}"

    plotly = _plotly_outputs(nb)
    assert len(plotly) >= 5, f"want the 4 study figures and the digit grid drawn, got {len(plotly)} plotly outputs"

    # What it wrote landed in its working directory, the temporary folder.
    for name in ("tutorial-notebook.db", "tutorial-report.html", "tutorial-final/model.keras",
                 "tutorial-final/metrics.json"):
        assert (folder / name).is_file(), f"{name} was not written"
