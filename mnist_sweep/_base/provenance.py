"""Provenance: what a study or a final model was made with, so a result can be traced and redone.

Recorded on every study as it is created (user attribute ``provenance``), in every final model's
``metrics.json``, carried by ``export`` (``source.provenance``) and shown by ``report``:
library versions, the Keras backend, the data source with the sha256 of the arrays actually
used, the code's version (and git commit where the package runs from a checkout), the machine.

Example:
    >>> info = collect(dataset, backend="jax")
    >>> sorted(info)
    ['backend', 'code', 'data', 'machine', 'versions']
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

_VERSIONED = ("keras", "jax", "jaxlib", "tensorflow", "optuna", "numpy", "pandas", "plotly")


def versions() -> dict[str, str]:
    """Python's and the installed libraries' versions (those that are installed)."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def arrays_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the arrays' shapes, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def data_info(dataset: Any) -> dict[str, Any]:
    """The data source, split sizes and the sha256 of the arrays a sweep or model used."""
    return {
        "source": dataset.source,
        "train_images": len(dataset.x_train),
        "validation_images": len(dataset.x_val),
        "test_images": len(dataset.x_test),
        "sha256": arrays_sha256(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val,
                                dataset.x_test, dataset.y_test),
    }


@functools.cache
def code_info() -> dict[str, Any]:
    """The package version, and the git commit (with a dirty flag) when it runs from a checkout."""
    from mnist_sweep.version import __version__

    info: dict[str, Any] = {"version": __version__}
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5, check=True).stdout.strip()
            info.update(git_commit=commit, git_dirty=bool(dirty))
        except (OSError, subprocess.SubprocessError):
            pass
    return info


@functools.cache
def machine_info() -> dict[str, Any]:
    """CPU model, cores this process may use, the OS and the architecture."""
    from mnist_sweep._base.settings import cpu_count

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": cpu_count(), "cores_total": os.cpu_count(), "os": platform.platform(),
            "machine": platform.machine()}


def collect(dataset: Any, backend: str) -> dict[str, Any]:
    """Everything above for a run on ``dataset`` with the Keras ``backend``."""
    return {"versions": versions(), "backend": backend, "data": data_info(dataset), "code": code_info(),
            "machine": machine_info()}
