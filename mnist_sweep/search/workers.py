"""Local parallel workers: N processes that share one study, each with its share of the CPU.

``run --jobs N`` (:func:`mnist_sweep.run` with ``jobs=N``) validates the sweep and the data,
creates the study once (so enqueued trials are enqueued once), then starts N ``python -m
mnist_sweep worker`` processes on the same storage and study. Each worker runs the ordinary
sweep loop (:func:`mnist_sweep.search.loop.run_sweep`): it counts COMPLETE + PRUNED + RUNNING trials
in the storage before every trial, so the target is met exactly across workers. This module
starts the workers, prefixes each output line with the worker's id, forwards SIGINT and SIGTERM
to them and waits for them.

Cores: TensorFlow and XLA size their thread pools from the cores a process may run on, so N
workers on one machine would each start one thread per core and fight over them. ``run --jobs N``
gives each worker its own share of the cores (:func:`cpu_shares`): the worker pins itself to
them (``--cpus``) and limits its pools to as many threads (``--threads``), both before Keras is
imported (:mod:`mnist_sweep._base.settings`). Pinning is what makes the share real on
JAX: XLA's flag for one thread covers its Eigen pool only, while its dot library (XNNPACK) and
its compiler (LLVM) still start a thread per core, so an unpinned "one-thread" worker kept 1.7
cores busy and two of them oversubscribed the machine.

GPUs (:func:`worker_places` given the GPUs JAX sees): the workers are not pinned and keep every
thread (each needs host threads to feed its GPU), are spread over the GPUs one after the other
(``CUDA_VISIBLE_DEVICES``), and workers that share a GPU do not preallocate its memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``: JAX would claim 75% of the card per process, and the
second worker's trials fail for memory). What the user's environment already sets stays.

The storage URL reaches the workers through ``$MNIST_SWEEP_STORAGE``, not their command line,
so a password in it does not show in ``ps``.

Example:
    >>> argv = worker_argv("/tmp/quick.json", "quick", threads=1, worker_id=0, cpus=[0])
    >>> result = run_workers([argv, argv], env={"MNIST_SWEEP_STORAGE": "sqlite:///studies/q.db"})
    >>> result.codes, result.signal
    ([0, 0], None)
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from mnist_sweep._base.settings import allowed_cpus, cpu_count, format_cpu_list

_PR_SET_PDEATHSIG = 1

#: What a worker that shares its GPU gets: memory allocated as it is needed, not most of the card at start.
_SHARED_GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def thread_share(jobs: int, cpus: int | None = None) -> int:
    """Threads per worker when ``jobs`` workers share ``cpus`` cores (at least 1)."""
    return max(1, (cpus or cpu_count()) // max(1, jobs))


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


def worker_argv(sweep_path: str, study_name: str, threads: int | None, worker_id: int,
                cpus: Sequence[int] | None = None) -> list[str]:
    """The command line of one worker: ``python -m mnist_sweep worker SWEEP --study NAME [--threads K]
    --worker-id I [--cpus LIST]``. ``SWEEP`` is the validated sweep as the parent holds it (overrides
    applied), written to a file, so every worker runs exactly the parent's sweep."""
    argv = [sys.executable, "-m", "mnist_sweep", "worker", str(sweep_path), "--study", study_name]
    if threads:
        argv += ["--threads", str(threads)]
    argv += ["--worker-id", str(worker_id)]
    if cpus:
        argv += ["--cpus", format_cpu_list(cpus)]
    return argv


@dataclass(frozen=True)
class WorkerPlace:
    """Where one worker runs: its thread limit and cores (None: every one) and what its environment adds."""

    threads: int | None = None
    cpus: list[int] | None = None
    env: dict[str, str] = field(default_factory=dict)


def worker_places(jobs: int, gpus: Sequence[str] = (), cpus: Sequence[int] | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[list[WorkerPlace], str]:
    """Where each of ``jobs`` workers runs, and a few words that say it for ``run``'s first line.

    Without ``gpus`` (a machine whose JAX sees none): each worker on its own cores (:func:`cpu_shares`
    of ``cpus``) with as many threads, or, with more workers than cores, all sharing every core with
    :func:`thread_share` threads. With ``gpus`` (their ``CUDA_VISIBLE_DEVICES`` names): worker i on
    ``gpus[i % len(gpus)]``, unpinned, every thread; where a GPU has several workers, none of them
    preallocates its memory (unless ``environ``, default ``os.environ``, says otherwise).

    >>> [p.cpus for p in worker_places(2, cpus=[0, 1])[0]]
    [[0], [1]]
    >>> [p.env["CUDA_VISIBLE_DEVICES"] for p in worker_places(3, gpus=["0", "1"])[0]]
    ['0', '1', '0']
    """
    if not gpus:
        shares = cpu_shares(jobs, cpus)
        if shares:  # each worker on its own cores, with as many threads
            return ([WorkerPlace(len(share), share) for share in shares],
                    f"on cores {' | '.join(format_cpu_list(share) for share in shares)}")
        threads = thread_share(jobs, len(cpus) if cpus else None)
        return [WorkerPlace(threads) for _ in range(jobs)], f"x {threads} thread(s), sharing every core"
    environ = os.environ if environ is None else environ
    on = [gpus[i % len(gpus)] for i in range(jobs)]
    places = []
    for gpu in on:
        shared = _SHARED_GPU_ENV if on.count(gpu) > 1 else {}
        places.append(WorkerPlace(env={"CUDA_VISIBLE_DEVICES": gpu,
                                       **{k: v for k, v in shared.items() if k not in environ}}))
    return places, f"on gpu {' | '.join(on)}, sharing every core"


@dataclass
class WorkersResult:
    """Exit codes of the workers (a negative code: killed by that signal) and the signal that stopped the run."""

    codes: list[int]
    signal: int | None = None
    last_lines: list[str] = field(default_factory=list)  # each worker's last non-empty output line


def run_workers(argvs: Sequence[Sequence[str]], env: Mapping[str, str] | None = None,
                out: TextIO | None = None, envs: Sequence[Mapping[str, str]] | None = None) -> WorkersResult:
    """Start one process per command line, relay their output line by line, wait for all of them.

    Each worker's environment is this process's, plus ``env``, plus its own entry of ``envs``.

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
        for i, argv in enumerate(argvs):  # every worker before any reader thread: preexec_fn is not thread-safe
            own = {**child_env, **envs[i]} if envs else child_env
            procs.append(subprocess.Popen(list(argv), env=own, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, bufsize=1,
                                          preexec_fn=_die_with_parent))
        lock = threading.Lock()
        last = [""] * len(procs)
        readers = [threading.Thread(target=_relay, args=(p, f"[w{i}] ", out, lock, last, i - 1), daemon=True)
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
    return WorkersResult(codes=codes, signal=received[0] if received else None, last_lines=last)


def _relay(proc: subprocess.Popen[str], prefix: str, out: TextIO, lock: threading.Lock, last: list[str],
           index: int) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with lock:
            out.write(prefix + line)
            out.flush()
        if line.strip():
            last[index] = line.strip()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so no worker is orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def default_worker_id() -> int:
    """A ``worker``'s index when none is given, which offsets its sampler seed: Kubernetes'
    ``$JOB_COMPLETION_INDEX`` (an Indexed Job), else random (independent machines must not share
    a seed)."""
    index = os.environ.get("JOB_COMPLETION_INDEX", "")
    if index.isdigit():
        return int(index)

    return 1 + secrets.randbelow(1_000_000)
