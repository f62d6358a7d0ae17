"""Provenance: what a study or a final model was made with, so a result can be traced and redone.

Recorded on every study as it is created (user attribute ``provenance``), in every final model's
``metrics.json``, carried by ``export`` (``source.provenance``) and shown by ``report``:
library versions, the Keras backend, the data source with the sha256 of the arrays actually
used, the code's version (and git commit where the package runs from a checkout), the machine.

The data are identified by content: for each split (train, validation, test) the sha256 of its
images and labels, its image count and its per-class counts (``data.splits``). Resuming a study,
``final`` and ``train`` compare the data they load with what the study recorded
(:func:`check_same_data`) and refuse changed data with one line naming what changed, before
anything is written: a kept model must never be tested on images it trained on. Studies recorded
before the splits were (no ``data.splits``) are not checked.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mnist_sweep._base.settings import cpu_count
from mnist_sweep.errors import InputError
from mnist_sweep.version import __version__

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


#: The splits a dataset's identity records, with the attribute suffix of their arrays.
_SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))


def data_info(dataset: Any) -> dict[str, Any]:
    """The data source, split sizes and the sha256 of the arrays a sweep or model used, and each
    split's identity (:func:`split_identity`) under ``splits``."""
    return {
        "source": dataset.source,
        "train_images": len(dataset.x_train),
        "validation_images": len(dataset.x_val),
        "test_images": len(dataset.x_test),
        "sha256": arrays_sha256(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val,
                                dataset.x_test, dataset.y_test),
        "splits": split_identity(dataset),
    }


def split_identity(dataset: Any) -> dict[str, dict[str, Any]]:
    """Each split's content: ``{"train": {"images": n, "classes": {name: count}, "sha256": ...},
    "validation": ..., "test": ...}`` (the sha256 over the split's images and labels)."""
    names = [str(n) for n in dataset.class_names]
    splits = {}
    for split, suffix in _SPLITS:
        x, y = getattr(dataset, f"x_{suffix}"), getattr(dataset, f"y_{suffix}")
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(names)) if len(y) else [0] * len(names)
        splits[split] = {"images": int(len(y)), "classes": {n: int(c) for n, c in zip(names, counts, strict=False)},
                         "sha256": arrays_sha256(x, y)}
    return splits


def data_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`split_identity` records, one phrase per changed split, e.g.
    ``"train images 1040 -> 1041, class 'topbar' 260 -> 261"``; empty when the content is the same."""
    changes = []
    for split, _ in _SPLITS:
        old, new = recorded.get(split), current.get(split)
        if not old or not new or old.get("sha256") == new.get("sha256"):
            continue
        old_classes, new_classes = old.get("classes", {}), new.get("classes", {})
        classes = [f"class '{name}' {old_classes.get(name, 0)} -> {new_classes.get(name, 0)}"
                   for name in dict.fromkeys([*old_classes, *new_classes])
                   if old_classes.get(name, 0) != new_classes.get(name, 0)]
        if len(classes) > 3:
            classes = [*classes[:3], f"{len(classes) - 3} more classes"]
        if old.get("images") != new.get("images"):
            changes.append(", ".join([f"{split} images {old.get('images')} -> {new.get('images')}", *classes]))
        elif classes:
            changes.append(f"{split} " + ", ".join(classes))
        else:
            changes.append(f"other {split} images (the same counts)")
    return changes


def check_same_data(recorded: Mapping[str, Any] | None, current: Any, study: str, consequence: str) -> None:
    """Refuse data that changed since ``study`` recorded them.

    Args:
        recorded: the study's provenance (or its ``data`` part); without ``data.splits`` (a study
            made before they were recorded, or none) nothing is checked.
        current: the data loaded now: a :class:`~mnist_sweep.data.dataset.Dataset`, or a provenance
            (or its ``data`` part) collected from it.
        study: the study's name, for the message.
        consequence: the end of the message: what the change would spoil, and what to do.

    Raises:
        InputError: one line, e.g. ``data changed since study 'shapes' was made: train images
            1040 -> 1041, class 'topbar' 260 -> 261; ...``.
    """
    old = _splits_of(recorded)
    if not old:
        return
    new = _splits_of(current) if isinstance(current, Mapping) else split_identity(current)
    changes = data_changes(old, new or {})
    if changes:
        raise InputError(f"data changed since study '{study}' was made: {'; '.join(changes)}; {consequence}")


def _splits_of(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not isinstance(record, Mapping):
        return None
    data = record.get("data", record)
    return data.get("splits") if isinstance(data, Mapping) else None


@functools.cache
def code_info() -> dict[str, Any]:
    """The package version, and the git commit (with a dirty flag) when it runs from a checkout."""

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
