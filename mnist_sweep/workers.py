"""Local parallel workers: N processes that share one study, each with its share of the CPU.

``run --jobs N`` validates the sweep and the data, creates the study once (so enqueued trials
are enqueued once), then starts N ``python -m mnist_sweep worker`` processes on the same storage
and study. Each worker runs the ordinary sweep loop (:func:`mnist_sweep.study.run_sweep`): it
counts COMPLETE + PRUNED + RUNNING trials in the storage before every trial, so the target is met
exactly across workers. This module starts the workers, prefixes each output line with the
worker's id, forwards SIGINT and SIGTERM to them and waits for them.

Threads: TensorFlow and XLA size their thread pools from the machine's core count, so N workers
on one machine would each start one thread per core and fight over them. A worker started with
``--threads K`` limits its pools to K threads (environment variables read when the runtime
starts, plus ``tf.config.threading`` on the TensorFlow backend): call :func:`limit_threads`
before Keras is imported.

The storage URL reaches the workers through ``$MNIST_SWEEP_STORAGE``, not their command line,
so a password in it does not show in ``ps``.

Example:
    >>> argv = worker_argv("sweeps/quick.yaml", "quick", threads=1)
    >>> result = run_workers([argv, argv], env={"MNIST_SWEEP_STORAGE": "sqlite:///studies/q.db"})
    >>> result.codes, result.signal
    ([0, 0], None)
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
_PR_SET_PDEATHSIG = 1


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_share(jobs: int, cpus: int | None = None) -> int:
    """Threads per worker when ``jobs`` workers share ``cpus`` cores (at least 1)."""
    return max(1, (cpus or cpu_count()) // max(1, jobs))


def limit_threads(threads: int) -> None:
    """Limit this process's compute thread pools to ``threads``; call before Keras is imported.

    Sets OpenMP/BLAS/TensorFlow thread variables and, for one thread, XLA's single-threaded CPU
    mode (the JAX backend; XLA has no flag for a pool of K > 1 threads).
    """
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            single = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{flags} {single}".strip()


def apply_backend_threads(threads: int, backend: str) -> None:
    """On the TensorFlow backend, set its intra/inter-op pools before its runtime starts."""
    if backend != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:  # the runtime already started (e.g. in-process tests): the env vars still apply
        pass


def worker_argv(
    sweep_path: str, study_name: str, threads: int, overrides: Mapping[str, Any] | None = None
) -> list[str]:
    """The command line of one worker: ``python -m mnist_sweep worker SWEEP --study NAME --threads K ...``.

    ``overrides`` are the run's command-line overrides (``trials``, ``timeout``, ``seed``, ``data``)
    and ``worker_id``,
    passed on so every worker validates the same sweep as the parent.
    """
    argv = [sys.executable, "-m", "mnist_sweep", "worker", str(sweep_path), "--study", study_name,
            "--threads", str(threads)]
    for key, value in (overrides or {}).items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


@dataclass
class WorkersResult:
    """Exit codes of the workers (a negative code: killed by that signal) and the signal that stopped the run."""

    codes: list[int]
    signal: int | None = None


def run_workers(argvs: Sequence[Sequence[str]], env: Mapping[str, str] | None = None,
                out: TextIO | None = None) -> WorkersResult:
    """Start one process per command line, relay their output line by line, wait for all of them.

    Each output line (stdout and stderr) is printed to ``out`` prefixed with ``[wI]``. SIGINT and
    SIGTERM received meanwhile are forwarded to every worker that is still running (each then
    fails its running trial and exits 130 or 143) and recorded in the result. A worker dies with
    its parent: if this process is killed, the workers get SIGTERM.
    """
    out = out or sys.stdout
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[str]] = []
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    # SIGINT ignored (a background job of a script) stays ignored, and the workers inherit that
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    handlers = {s: signal.signal(s, forward) for s in signals}
    try:
        for argv in argvs:  # every worker before any reader thread: preexec_fn is not thread-safe
            procs.append(subprocess.Popen(list(argv), env=child_env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, bufsize=1,
                                          preexec_fn=_die_with_parent))
        lock = threading.Lock()
        readers = [threading.Thread(target=_relay, args=(p, f"[w{i}] ", out, lock), daemon=True)
                   for i, p in enumerate(procs, start=1)]
        for reader in readers:
            reader.start()
        codes = [p.wait() for p in procs]
        for reader in readers:
            reader.join(timeout=5)
    finally:
        for proc in procs:  # an exception here (not a signal: those are forwarded) must not orphan workers
            if proc.poll() is None:
                proc.terminate()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return WorkersResult(codes=codes, signal=received[0] if received else None)


def _relay(proc: subprocess.Popen[str], prefix: str, out: TextIO, lock: threading.Lock) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with lock:
            out.write(prefix + line)
            out.flush()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so no worker is orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
