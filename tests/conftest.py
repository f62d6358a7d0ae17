"""Shared fixtures: small sweeps on real MNIST subsets, temporary SQLite storages."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mnist_sweep._base.settings import use_backend  # noqa: E402

use_backend("auto")  # the backend a user's `run` gets, chosen before any test imports Keras

REPO = Path(__file__).resolve().parents[1]

#: A sweep that trains in about a second per trial: 2,000 training and 1,000 validation images.
TINY_SWEEP: dict[str, Any] = {
    "name": "tiny",
    "trials": 3,
    "seed": 0,
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "pruner": {"name": "none"},
    "data": {"validation_size": 1000, "train_size": 2000},
    "space": {
        "hidden_layers": {"low": 0, "high": 1},
        "units": [16, 32],
        "dropout": {"low": 0.0, "high": 0.3, "step": 0.1},
        "optimizer": ["sgd", "adam"],
        "batch_size": 128,
        "epochs": {"low": 1, "high": 2},
        "learning_rate": {"low": 1e-3, "high": 1e-1, "log": True},
    },
    "heartbeat": {"interval": 1, "grace_period": 3},
    "training": {"measure_latency": False},  # a second per trial; tests/test_api.py measures it
}


@pytest.fixture(autouse=True, scope="session")
def _session_in_tmp_path(tmp_path_factory):
    """Module- and session-scoped fixtures run before a test's own folder is entered: they too
    write into a temporary folder, never into the repository."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("session-cwd"))
    yield
    os.chdir(here)


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch) -> None:
    """Every test runs in its own folder: what sweeps write beside them (studies/<study>/artifacts,
    exports, models, reports) never lands in the repository or in another test's way."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_sweep(tmp_path: Path):
    """Write a sweep YAML (TINY_SWEEP updated with ``changes``) and return its path."""

    def write(name: str = "tiny", **changes: Any) -> Path:
        data = {**TINY_SWEEP, "name": name, **changes}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture(scope="session")
def tiny_dataset():
    """Real MNIST, loaded once for the whole test session, cut to 2,000 train / 1,000 validation images."""
    from mnist_sweep.data.dataset import load_dataset
    from mnist_sweep.sweep.config import DataConfig

    return load_dataset(DataConfig(validation_size=1000, train_size=2000))


@contextmanager
def scratch_database(server: str, admin_database: str = "", drop_options: str = "") -> Iterator[str]:
    """A new, empty database on a running server (an SQLAlchemy URL without a database), created
    through ``admin_database`` and dropped on exit; yields its URL."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(f"{server}/{admin_database}", isolation_level="AUTOCOMMIT")
    name = f"mnist_sweep_test_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield f"{server}/{name}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} {drop_options}".rstrip())
    finally:
        admin.dispose()
