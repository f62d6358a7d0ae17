"""What several test files share: the tiny sweep, a free port, a scratch database on a running server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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



def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
