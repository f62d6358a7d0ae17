"""Shared fixtures: small sweeps on real MNIST subsets, temporary SQLite storages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mnist_sweep._base.settings import use_backend  # noqa: E402

use_backend("auto")  # the backend a user's `run` gets, chosen before any test imports Keras

from helpers import TINY_SWEEP  # noqa: E402


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


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster of the test session's own (tests/servers.py), started at first use."""
    from servers import running_postgres

    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server():
    """A MariaDB server of the test session's own (tests/servers.py), started at first use."""
    from servers import PrivateMariaDB, private_folder

    folder = private_folder("mnist-sweep-mariadb-")
    server = PrivateMariaDB(folder)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database on the session's PostgreSQL cluster, dropped afterwards."""
    from helpers import scratch_database

    with scratch_database(postgres_server.server, "postgres", drop_options="WITH (FORCE)") as url:
        yield url
