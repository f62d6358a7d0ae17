"""Optuna's gRPC storage proxy in front of a sweep's RDB storage.

Why: workers that share a study through PostgreSQL each hold their own database connections and
each re-read the study's unfinished trials through their own cache. Optuna's proxy
(``optuna.storages.run_grpc_proxy_server``) puts one process, one connection pool and one cache
between the workers and the database; the workers then open ``GrpcStorageProxy(host=..., port=...)``
instead of the URL. Whether that pays is measured by :mod:`mnist_sweep.bench.storage`: on 2
cores with 16 workers it did not (4.3 trials/s against 7.5 direct; the proxy is one Python
process, and the GIL caps it near 5 trials/s; see ``docs/storage-scaling.md``).

Limits (Optuna 5.0): the proxy is experimental, has **no heartbeats** (a worker that dies leaves
its trial RUNNING: ``GrpcStorageProxy`` is not a ``BaseHeartbeat``, so the product's dead-worker
reaping is off behind it), and speaks plain gRPC with **no TLS and no authentication**: anyone who
reaches the port can read and rewrite every study. It listens on loopback unless told otherwise.

Example:
    >>> serve_storage_proxy("postgresql+psycopg://postgres@127.0.0.1:5432/sweeps")  # blocks
    >>> # in each worker:
    >>> storage = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=13000)
"""

from __future__ import annotations

import multiprocessing
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna

from mnist_sweep._base.hosts import is_loopback
from mnist_sweep.storage.rdb import open_storage, redact


def serve_storage_proxy(storage_url: str, host: str = "127.0.0.1", port: int = 13000) -> None:
    """Serve the RDB storage at ``storage_url`` through Optuna's gRPC proxy until killed.

    What: opens the storage as sweeps do (:func:`mnist_sweep.storage.rdb.open_storage`: the atomic
    claim of queued trials, pre-pinged connections) without heartbeats (the proxy cannot relay
    them), wraps it in Optuna's trial cache (Optuna's advice: a bare ``RDBStorage`` behind the
    proxy re-reads every trial on every call) and serves it on ``host:port``.

    Why: one process and one connection pool in front of the database for many workers; see
    the module docstring for when that pays and what it gives up (heartbeats, TLS, auth).

    A host other than loopback is served, with a ``UserWarning``: the proxy has no TLS and no
    authentication, so put it behind a private network or an SSH tunnel.

    Example:
        >>> serve_storage_proxy("postgresql+psycopg://postgres@127.0.0.1:5432/sweeps", port=13000)
        >>> # workers: optuna.load_study(study_name="quick",
        >>> #     storage=optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=13000))

    Raises:
        mnist_sweep.errors.InputError: the storage cannot be opened.
        ImportError: grpcio is missing (``pip install grpcio protobuf``).
    """
    if not is_loopback(host):
        warnings.warn(f"the storage proxy on {host}:{port} has no TLS and no authentication: anyone who reaches "
                      "the port can read and change every study", UserWarning, stacklevel=2)
    import grpc  # noqa: F401  (fail here, before the database is touched, when grpcio is missing)

    rdb = open_storage(storage_url, heartbeat=None)
    storage = optuna.storages.get_storage(rdb)  # _CachedStorage(rdb): Optuna's advice for the proxy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        print(f"storage proxy: {redact(storage_url)} on {host}:{port}", file=sys.stderr, flush=True)
        optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)


@contextmanager
def running_storage_proxy(storage_url: str, host: str = "127.0.0.1", port: int | None = None,
                          ready_timeout: float = 60.0) -> Iterator[tuple[str, int]]:
    """:func:`serve_storage_proxy` in a spawned process (on a free port when ``port`` is None);
    yields ``(host, port)`` once the proxy answers and stops the process on exit.

    Example:
        >>> with running_storage_proxy("postgresql+psycopg://postgres@127.0.0.1:5432/sweeps") as (host, port):
        ...     study = optuna.load_study(study_name="quick",
        ...                               storage=optuna.storages.GrpcStorageProxy(host=host, port=port))

    Raises:
        ConnectionError: the proxy did not answer within ``ready_timeout`` seconds.
    """
    if port is None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    server = multiprocessing.get_context("spawn").Process(target=serve_storage_proxy, args=(storage_url, host, port),
                                                          daemon=True, name="storage-proxy")
    server.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.GrpcStorageProxy(host=host, port=port).wait_server_ready(timeout=ready_timeout)
        yield host, port
    finally:
        server.terminate()
        server.join(timeout=10)
