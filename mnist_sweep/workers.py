"""Local parallel workers: N processes that share one study, each with its share of the CPU.

``run --jobs N`` validates the sweep and the data, creates the study once (so enqueued trials
are enqueued once), then starts N ``python -m mnist_sweep worker`` processes on the same storage
and study. Each worker runs the ordinary sweep loop (:func:`mnist_sweep.study.run_sweep`): it
counts COMPLETE + PRUNED + RUNNING trials in the storage before every trial, so the target is met
exactly across workers. This module starts the workers, prefixes each output line with the
worker's id, forwards SIGINT and SIGTERM to them and waits for them.

Cores: TensorFlow and XLA size their thread pools from the cores a process may run on, so N
workers on one machine would each start one thread per core and fight over them. ``run --jobs N``
gives each worker its own share of the cores (:func:`cpu_shares`): the worker pins itself to
them (``--cpus``, :func:`pin_to_cpus`) and limits its pools to as many threads (``--threads``,
:func:`limit_threads`), both before Keras is imported. Pinning is what makes the share real on
JAX: XLA's flag for one thread covers its Eigen pool only, while its dot library (XNNPACK) and
its compiler (LLVM) still start a thread per core, so an unpinned "one-thread" worker kept 1.7
cores busy and two of them oversubscribed the machine.

The storage URL reaches the workers through ``$MNIST_SWEEP_STORAGE``, not their command line,
so a password in it does not show in ``ps``.

Example:
    >>> argv = worker_argv("sweeps/quick.yaml", "quick", threads=1, cpus=[0])
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

from mnist_sweep.errors import InputError

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
_PR_SET_PDEATHSIG = 1


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    allowed = allowed_cpus()
    return len(allowed) if allowed else os.cpu_count() or 1


def thread_share(jobs: int, cpus: int | None = None) -> int:
    """Threads per worker when ``jobs`` workers share ``cpus`` cores (at least 1)."""
    return max(1, (cpus or cpu_count()) // max(1, jobs))


def allowed_cpus() -> list[int] | None:
    """The cores this process may run on, or None where the OS has no affinity API (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def cpu_shares(jobs: int, cpus: Sequence[int] | None = None) -> list[list[int]] | None:
    """Split ``cpus`` (default: :func:`allowed_cpus`) into ``jobs`` disjoint runs of consecutive
    cores whose sizes differ by at most one; None when there are fewer cores than jobs or no
    affinity API (the workers then share every core).

    >>> cpu_shares(2, [0, 1]), cpu_shares(2, [0, 1, 2]), cpu_shares(3, [0, 1])
    ([[0], [1]], [[0, 1], [2]], None)
    """
    cpus = list(cpus) if cpus is not None else allowed_cpus()
    if not cpus or jobs < 1 or jobs > len(cpus):
        return None
    size, extra = divmod(len(cpus), jobs)
    shares, start = [], 0
    for i in range(jobs):
        end = start + size + (1 if i < extra else 0)
        shares.append(cpus[start:end])
        start = end
    return shares


def parse_cpu_list(text: str) -> list[int]:
    """Cores written as Linux writes them (``taskset -c``, ``/sys/.../cpus_allowed_list``): ``0-3,6``.

    >>> parse_cpu_list("0-2,5")
    [0, 1, 2, 5]
    """
    cpus: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"not a core list like 0-3,6: {text!r}")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError(f"range {part.strip()!r} runs backwards")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Sequence[int]) -> str:
    """The inverse of :func:`parse_cpu_list`: ``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def pin_to_cpus(cpus: Sequence[int]) -> None:
    """Run this process (and the threads it starts later) on ``cpus`` only; call before Keras is
    imported, so the runtimes size their thread pools to them.

    Raises:
        InputError: a core is not one this process may use, or the OS cannot pin (not Linux).
    """
    allowed = allowed_cpus()
    if allowed is None:
        raise InputError("--cpus: pinning to cores needs Linux (sched_setaffinity)")
    missing = sorted(set(cpus) - set(allowed))
    if missing:
        raise InputError(f"--cpus: core {format_cpu_list(missing)} is not available to this process "
                         f"(available: {format_cpu_list(allowed)})")
    os.sched_setaffinity(0, cpus)


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
    sweep_path: str, study_name: str, threads: int, overrides: Mapping[str, Any] | None = None,
    cpus: Sequence[int] | None = None,
) -> list[str]:
    """The command line of one worker: ``python -m mnist_sweep worker SWEEP --study NAME --threads K
    [--cpus LIST] ...``.

    ``overrides`` are the run's command-line overrides (``trials``, ``timeout``, ``seed``, ``data``)
    and ``worker_id``, passed on so every worker validates the same sweep as the parent.
    """
    argv = [sys.executable, "-m", "mnist_sweep", "worker", str(sweep_path), "--study", study_name,
            "--threads", str(threads)]
    if cpus:
        argv += ["--cpus", format_cpu_list(cpus)]
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
