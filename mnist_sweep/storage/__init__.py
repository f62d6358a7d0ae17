"""Where trials live: Optuna's RDB storage opened safely (SQLite, PostgreSQL, MySQL), its retries
through an outage, the stale-trial reaper, and Optuna's gRPC proxy.
"""

from __future__ import annotations

from mnist_sweep.storage.proxy import running_storage_proxy, serve_storage_proxy
from mnist_sweep.storage.rdb import open_storage, reap_dead_trials, redact

__all__ = [
    "open_storage",
    "redact",
    "reap_dead_trials",
    "serve_storage_proxy",
    "running_storage_proxy",
]
