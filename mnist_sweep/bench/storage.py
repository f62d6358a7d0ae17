"""The storage's cost per trial as workers grow, and direct PostgreSQL against Optuna's gRPC proxy.

W spawned workers run trials on one study, opened as sweeps open it (``open_storage``: the
claiming RDB storage, the sweep's default heartbeat). A trial does to the storage what a sweep's
does: the loop's count, the surplus and enqueued checks, 12 suggestions, 10 epochs of report and
``should_prune`` (a median pruner that never prunes: every trial does the same work), 7 user
attributes, and 0.02 s of sleep per epoch as "training", so the figure is the storage, not the CPU.
A trial's storage time is what its worker's main thread spends inside the storage object the study
calls (Optuna's ``_CachedStorage``, or ``GrpcStorageProxy``); "RDB" is the same for the RDB storage
under the cache; the heartbeat thread's calls do not block the trial and are counted apart.
See docs/storage-scaling.md.

Example:
    $ python -m mnist_sweep.bench.storage --workers 1,2,4,8,16 --trials-per-worker 20 --proxy
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import secrets
import statistics
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import psycopg
from sqlalchemy.engine import make_url

from mnist_sweep.bench._scratch import scratch_dir
from mnist_sweep.bench._storage_worker import EPOCH_SLEEP_S, EPOCHS, READY_TIMEOUT_S, run_worker
from mnist_sweep.storage.proxy import running_storage_proxy
from mnist_sweep.storage.rdb import open_storage

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@dataclass
class ArmResult:
    """One measured run of ``workers`` processes on one study; times in seconds, per trial."""

    label: str
    workers: int
    trials: int
    study: str
    seconds: float
    trials_per_s: float
    storage_p50_s: float
    storage_p99_s: float
    storage_cpu_mean_s: float  # of the storage time, CPU of the worker's own thread (the client side)
    rdb_p50_s: float | None  # None behind the proxy: the SQL runs in the proxy's process
    rdb_p99_s: float | None
    calls_per_trial: float
    trial_p50_s: float
    heartbeat_s_per_trial: float
    cpu_busy: float | None  # share of the machine's cores busy during the run (every process), from /proc/stat


@dataclass
class BenchResult:
    """The scaling rows (direct, heartbeats on) and, with ``proxy``, the arms compared at one W."""

    scaling: list[ArmResult]
    proxy: list[ArmResult]


@contextmanager
def temp_database(server: str = SERVER, admin_db: str = "postgres") -> Iterator[str]:
    """A new, empty PostgreSQL database on ``server`` (an SQLAlchemy URL without a database),
    created through ``admin_db`` and dropped on exit, error or not; yields its SQLAlchemy URL."""
    name = f"bench_storage_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_url(f"{server}/{admin_db}").set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the machine since boot (Linux), else None."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:9]]  # not guest: counted in user already
    except (OSError, ValueError):
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # all but idle and iowait


def _quantile(values: Sequence[float], q: int) -> float:
    return values[0] if len(values) == 1 else statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _collect(procs: Sequence[Any], results: Any) -> list[tuple[Any, ...]]:
    """One reply per worker; workers gone without one (killed, crashed) count as errors."""
    replies: list[tuple[Any, ...]] = []
    while len(replies) < len(procs):
        try:
            replies.append(results.get(timeout=5.0))
        except queue.Empty:
            if all(p.exitcode is not None for p in procs):  # every one has exited and said all it will
                replies += [("error", -1, 0.0, 0.0, "a worker exited without a reply")] * (len(procs) - len(replies))
    for proc in procs:
        proc.join(timeout=30)
    return replies


def run_arm(url: str, workers: int, trials_per_worker: int, label: str = "direct", heartbeat: bool = True,
            proxy: tuple[str, int] | None = None, sampler: str = "random", report_every: int = 1) -> ArmResult:
    """Create a new study in ``url``, run ``workers`` processes of ``trials_per_worker`` trials on it
    (through the proxy at ``proxy`` = (host, port) if given; reporting every ``report_every``
    epochs) and measure them. The workers run in a scratch folder, removed after; the study is in ``url``.

    Raises:
        RuntimeError: a worker failed (its traceback is in the message) or the study does not
            hold exactly ``workers * trials_per_worker`` COMPLETE trials.
    """
    name = f"bench-{label.replace(' ', '-')}-w{workers}-{secrets.token_hex(2)}"
    optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers + 1), ctx.Queue()  # the workers and this process
    with scratch_dir() as tmp:
        procs = [ctx.Process(target=run_worker, args=(proxy or url, name, i, trials_per_worker, heartbeat, sampler,
                                                   report_every, barrier, results, tmp), daemon=True)
                 for i in range(workers)]
        for proc in procs:
            proc.start()
        try:
            barrier.wait(timeout=READY_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass  # a worker failed: its reply says why
        before, replies, after = _cpu_ticks(), _collect(procs, results), _cpu_ticks()
    errors = [r[4] for r in replies if r[0] == "error"]
    if errors:
        raise RuntimeError(f"{len(errors)} of {workers} workers failed; the first:\n{errors[0]}")
    rows = [row for reply in replies for row in reply[4]]
    seconds = max(r[3] for r in replies) - min(r[2] for r in replies)
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) != workers * trials_per_worker:
        raise RuntimeError(f"study {name}: {len(done)} COMPLETE trials, expected {workers * trials_per_worker}")
    storage_s, rdb_s = [r[0] for r in rows], [r[1] for r in rows if r[1] is not None]
    busy = round((after[0] - before[0]) / max(1, after[1] - before[1]), 3) if before and after else None
    return ArmResult(
        label=label, workers=workers, trials=len(rows), study=name, seconds=round(seconds, 3),
        trials_per_s=round(len(rows) / seconds, 2), storage_p50_s=_quantile(storage_s, 50),
        storage_p99_s=_quantile(storage_s, 99), storage_cpu_mean_s=statistics.fmean(r[5] for r in rows),
        rdb_p50_s=_quantile(rdb_s, 50) if rdb_s else None, rdb_p99_s=_quantile(rdb_s, 99) if rdb_s else None,
        calls_per_trial=round(statistics.fmean(r[2] for r in rows), 1), trial_p50_s=_quantile([r[3] for r in rows], 50),
        heartbeat_s_per_trial=statistics.fmean(r[4] for r in rows), cpu_busy=busy)


def bench_storage(url: str, workers: Sequence[int] = (1, 2, 4, 8, 16), trials_per_worker: int = 20,
                  proxy: bool = False, proxy_workers: int = 16, sampler: str = "random",
                  log: Callable[[str], None] | None = None, report_every: int = 1) -> BenchResult:
    """Measure each worker count in ``workers`` (direct, heartbeats on), then with ``proxy`` three
    arms at ``proxy_workers``: direct with heartbeats, direct without, and the gRPC proxy (which
    cannot do heartbeats: the fair comparison is with the direct arm without)."""
    say = log or (lambda message: None)
    scaling = []
    for w in workers:
        say(f"direct, {w} workers x {trials_per_worker} trials")
        scaling.append(run_arm(url, w, trials_per_worker, sampler=sampler, report_every=report_every))
    compared: list[ArmResult] = []
    if proxy:
        compared = [r for r in scaling if r.workers == proxy_workers][:1] or [
            run_arm(url, proxy_workers, trials_per_worker, sampler=sampler, report_every=report_every)]
        say(f"direct without heartbeats, {proxy_workers} workers")
        compared.append(run_arm(url, proxy_workers, trials_per_worker, "direct no heartbeat", False, None, sampler,
                                report_every))
        with running_storage_proxy(url) as address:
            say(f"gRPC proxy, {proxy_workers} workers")
            compared.append(run_arm(url, proxy_workers, trials_per_worker, "grpc proxy", False, address, sampler,
                                    report_every))
    return BenchResult(scaling=scaling, proxy=compared)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def format_table(rows: Sequence[ArmResult]) -> str:
    """A Markdown table of ``rows`` (times in milliseconds per trial)."""
    lines = ["| arm | W | trials | trials/s | storage ms/trial p50 | p99 | of it CPU (mean) | RDB p50 | RDB p99 "
             "| calls/trial | trial ms p50 | heartbeat ms/trial | CPU busy |", "|" + "---|" * 13]
    for r in rows:
        cells = [r.label, r.workers, r.trials, f"{r.trials_per_s:.1f}", *map(_ms, (
            r.storage_p50_s, r.storage_p99_s, r.storage_cpu_mean_s, r.rdb_p50_s, r.rdb_p99_s)),
            f"{r.calls_per_trial:.0f}", _ms(r.trial_p50_s), _ms(r.heartbeat_s_per_trial),
            "-" if r.cpu_busy is None else f"{r.cpu_busy:.0%}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mnist_sweep.bench.storage``: measure in a temporary database, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m mnist_sweep.bench.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8,16", help="worker counts, comma-separated")
    parser.add_argument("--trials-per-worker", type=int, default=20)
    parser.add_argument("--proxy", action="store_true", help="also compare direct and the gRPC proxy")
    parser.add_argument("--proxy-workers", type=int, default=16)
    parser.add_argument("--sampler", choices=["random", "tpe"], default="random")
    parser.add_argument("--report-every", type=int, default=1, metavar="K",
                        help="report (and ask should_prune) every K epochs; default: every epoch, as sweeps do")
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL, without a database")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load = os.getloadavg()
    with temp_database(args.server) as url:
        result = bench_storage(url, [int(w) for w in args.workers.split(",") if w.strip()], args.trials_per_worker,
                               args.proxy, args.proxy_workers, args.sampler,
                               lambda m: print(f"[bench-storage] {m}", file=sys.stderr, flush=True), args.report_every)
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "load_before": load[0], **asdict(result)}, indent=2))
        return 0
    print(f"{os.cpu_count()} CPUs (load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after), "
          f"{args.trials_per_worker} trials per worker, {EPOCHS} epochs of {EPOCH_SLEEP_S} s, "
          f"a report every {args.report_every}, sampler {args.sampler}"
          f"\n\n{format_table(result.scaling)}")
    if result.proxy:
        print(f"\ndirect vs gRPC proxy at {args.proxy_workers} workers\n\n{format_table(result.proxy)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
