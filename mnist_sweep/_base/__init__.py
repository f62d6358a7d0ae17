"""Plumbing every group shares: default paths, atomic files, process settings (backend, threads,
CPUs), signals, provenance and the host checks of the local servers. Imports no other group.
"""

from __future__ import annotations

from mnist_sweep._base.files import atomic_path, write_text_atomic
from mnist_sweep._base.hosts import allowed_hosts, check_host, is_loopback
from mnist_sweep._base.paths import export_path, metrics_path, model_path, report_path, storage_url, study_dir
from mnist_sweep._base.provenance import collect
from mnist_sweep._base.settings import cpu_count, prepare_process, quiet_libraries, use_backend
from mnist_sweep._base.signals import StopSignals, Terminated

__all__ = [
    "storage_url",
    "study_dir",
    "report_path",
    "model_path",
    "metrics_path",
    "export_path",
    "atomic_path",
    "write_text_atomic",
    "use_backend",
    "prepare_process",
    "quiet_libraries",
    "cpu_count",
    "StopSignals",
    "Terminated",
    "collect",
    "is_loopback",
    "allowed_hosts",
    "check_host",
]
