"""Where things go by default: the one source for the storage URL and every per-study path.

Every per-study output (export, final model, metrics, report) lives in ``studies/<folder>/``,
where ``<folder>`` is :func:`safe_name` of the study's name: ``train``, ``report`` and
``export`` all ask :func:`study_dir`, so a study called ``my run`` has one folder,
``studies/my-run/``, whichever command looks for it.

Example:
    >>> study_dir("my run")
    PosixPath('studies/my-run')
    >>> storage_url(None)                      # without $MNIST_SWEEP_STORAGE
    'sqlite:///studies/mnist_sweep.db'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

STUDIES_DIR = Path("studies")
DEFAULT_STORAGE = f"sqlite:///{STUDIES_DIR}/mnist_sweep.db"
STORAGE_ENV = "MNIST_SWEEP_STORAGE"


def storage_url(value: str | None = None) -> str:
    """``value`` if given, else ``$MNIST_SWEEP_STORAGE``, else ``sqlite:///studies/mnist_sweep.db``."""
    return value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def safe_name(name: str) -> str:
    """``name`` as a file name and sweep name: letters, digits, ``_.-``; starts with a letter or digit."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip("-_.")
    return safe or "study"


def study_dir(study_name: str) -> Path:
    """``studies/<study>``: where a study's export, final model, metrics and report go by default."""
    return STUDIES_DIR / safe_name(study_name)


def report_path(study_name: str) -> Path:
    """``studies/<study>/report.html``."""
    return study_dir(study_name) / "report.html"


def model_path(study_name: str) -> Path:
    """``studies/<study>/model.keras``, the final model ``train`` writes."""
    return study_dir(study_name) / "model.keras"


def metrics_path(study_name: str) -> Path:
    """``studies/<study>/metrics.json``, the final model's test metrics (the report shows them)."""
    return study_dir(study_name) / "metrics.json"


def export_path(study_name: str, format: str = "yaml") -> Path:  # noqa: A002 - the CLI's --format
    """``studies/<study>/best.yaml`` (or ``best.json``), the exported best config."""
    return study_dir(study_name) / f"best.{format}"
