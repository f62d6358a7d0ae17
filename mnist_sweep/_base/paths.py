"""Where things go by default: the one source for the storage URL and every per-study path.

Every per-study output (export, final model, metrics, report, kept models) lives in
``studies/<folder>/``, where ``<folder>`` is :func:`safe_name` of the study's name: ``train``,
``report``, ``export`` and ``final`` all ask :func:`study_dir`, so a study has one folder
whichever command looks for it, and that folder is always a direct child of ``studies/``
(a study called ``../..`` or ``/tmp/x`` cannot write anywhere else).

A name that is already a plain file name (letters, digits, ``_.-``, starting with a letter or
digit, at most :data:`MAX_FOLDER_CHARS` characters) is its own folder: ``quick`` is
``studies/quick/``. Any other name is sanitised and marked with a hash of the raw name after a
``~`` (a character no plain name has), so two names never share a folder: ``col/x`` and
``col x`` become ``col-x~<hash>`` with different hashes, and neither can be confused with a
study literally called ``col-x``. A long name is cut the same way (to 100 characters, hash
included) rather than refused, so ``run --study <300 characters>`` gets a folder too.

Example:
    >>> study_dir("quick")
    PosixPath('studies/quick')
    >>> study_dir("my run")
    PosixPath('studies/my-run~d33e76095b')
    >>> storage_url(None)                      # without $MNIST_SWEEP_STORAGE
    'sqlite:///studies/mnist_sweep.db'
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

STUDIES_DIR = Path("studies")
DEFAULT_STORAGE = f"sqlite:///{STUDIES_DIR}/mnist_sweep.db"
STORAGE_ENV = "MNIST_SWEEP_STORAGE"
MAX_FOLDER_CHARS = 100  # far below a file system's 255 bytes per name, with room for tmp files
HASH_MARK = "~"  # never in a plain name: a folder holding it was sanitised
_HASH_CHARS = 10
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def storage_url(value: str | None = None) -> str:
    """``value`` if given, else ``$MNIST_SWEEP_STORAGE``, else ``sqlite:///studies/mnist_sweep.db``."""
    return value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def safe_name(name: str) -> str:
    """``name`` as one file name (see the module docstring): itself when plain, else sanitised + ``~hash``.

    The result holds only letters, digits and ``_.-~``, starts with a letter or digit, is at most
    :data:`MAX_FOLDER_CHARS` long, and differs for different names (up to a 40-bit hash collision).

    Example:
        >>> safe_name("tiny"), safe_name("../..")
        ('tiny', 'study~0cfd1c96cb')
    """
    if len(name) <= MAX_FOLDER_CHARS and _PLAIN.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip("-_.")
    stem = stem[: MAX_FOLDER_CHARS - _HASH_CHARS - 1].rstrip("-_.") or "study"
    return f"{stem}{HASH_MARK}{digest}"


def study_dir(study_name: str) -> Path:
    """``studies/<folder>``: where a study's export, final model, metrics and report go by default.

    Always a direct child of ``studies/`` (checked, not only promised by :func:`safe_name`).
    """
    folder = STUDIES_DIR / safe_name(study_name)
    if folder.parent != STUDIES_DIR or folder.name in ("", ".", ".."):  # pragma: no cover - safe_name's promise
        raise AssertionError(f"study folder {folder} is not inside {STUDIES_DIR}")
    return folder


def report_path(study_name: str) -> Path:
    """``studies/<folder>/report.html``."""
    return study_dir(study_name) / "report.html"


def model_path(study_name: str) -> Path:
    """``studies/<folder>/model.keras``, the final model ``train`` writes."""
    return study_dir(study_name) / "model.keras"


def metrics_path(study_name: str) -> Path:
    """``studies/<folder>/metrics.json``, the final model's test metrics (the report shows them)."""
    return study_dir(study_name) / "metrics.json"


def export_path(study_name: str, format: str = "yaml") -> Path:  # noqa: A002 - the CLI's --format
    """``studies/<folder>/best.yaml`` (or ``best.json``), the exported best config."""
    return study_dir(study_name) / f"best.{format}"


def sweep_name_of(study_name: str) -> str:
    """A valid sweep ``name:`` (letters, digits, ``_.-``, at most 95 characters) derived from ``study_name``."""
    return safe_name(study_name).replace(HASH_MARK, "-")[:95]
