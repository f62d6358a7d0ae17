"""Where the bench writes: a temporary folder of its own, removed when the part ends.

A sweep keeps its models in ``studies/<study>/artifacts`` under its working directory unless its
study names another folder, so the bench never lets a sweep start in the caller's: a child process
(``run``, an epoch probe) starts in the scratch folder (``cwd=``, :func:`child_env`), and a study in
this process is given an artifact folder inside it (:func:`keep_models_in`). The caller's working
directory is never changed.

Example:
    >>> with scratch_dir() as tmp:
    ...     subprocess.run([sys.executable, "-m", "mnist_sweep", "run", ...], cwd=tmp, env=child_env(tmp))
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from mnist_sweep.storage.artifacts import DIR_ATTR

#: The folder that holds this ``mnist_sweep`` package: children import the same code from anywhere.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A new temporary folder for one bench part (a context manager yielding its path; removed on exit)."""
    return tempfile.TemporaryDirectory(prefix="mnist-sweep-bench-")


def child_env(tmp: str, **extra: str) -> dict[str, str]:
    """The environment of a child process started in ``tmp``: this one's, plus ``extra``, with this
    package importable there (``python -m`` finds a checkout that is not installed only in its own
    folder) and JAX's compilation cache in ``tmp`` unless ``extra`` names one."""
    path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "xla"), **extra, "PYTHONPATH": path}


def keep_models_in(study: Any, folder: str | Path) -> None:
    """Make ``study`` (an Optuna study of this process) keep its models in ``folder``, not in
    ``studies/<study>/artifacts`` under the working directory."""
    study.set_user_attr(DIR_ATTR, str(Path(folder).resolve()))
