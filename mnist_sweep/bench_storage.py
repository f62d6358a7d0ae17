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
    $ python -m mnist_sweep.bench_storage --workers 1,2,4,8,16 --trials-per-worker 20 --proxy
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import multiprocessing
import os
import queue
import secrets
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import psycopg
from sqlalchemy.engine import make_url

from mnist_sweep.config import HeartbeatConfig
from mnist_sweep.optuna_internals import is_enqueued, study_storage
from mnist_sweep.storage import open_storage
from mnist_sweep.storage_proxy import running_storage_proxy

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
EPOCHS, EPOCH_SLEEP_S = 10, 0.02
_READY_TIMEOUT_S = 300.0
_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)


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


class _Clock:
    """Seconds inside wrapped calls, outermost only: [wall, CPU, calls] of the main thread, wall of others."""

    def __init__(self) -> None:
        self.main, self.background = [0.0, 0.0, 0], 0.0
        self._ident, self._local = threading.get_ident(), threading.local()

    def take(self) -> tuple[list[Any], float]:
        taken = self.main, self.background
        self.main, self.background = [0.0, 0.0, 0], 0.0
        return taken

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "inside", False):  # a call the storage makes to itself
                return fn(*args, **kwargs)
            self._local.inside, start, cpu = True, time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.inside, elapsed = False, time.perf_counter() - start
                if threading.get_ident() == self._ident:
                    self.main[0] += elapsed
                    self.main[1] += time.thread_time() - cpu
                    self.main[2] += 1
                else:
                    self.background += elapsed
        return timed


def _time_storage(storage: Any, clock: _Clock) -> None:
    """Wrap every method of ``storage`` in ``clock``, on the instance: private ones too, since the
    layer above calls some (``_CachedStorage`` reads through ``RDBStorage._get_trials``)."""
    for name, _ in inspect.getmembers(type(storage), inspect.isfunction):
        if not name.startswith("__"):
            setattr(storage, name, clock.wrap(getattr(storage, name)))


@contextmanager
def temp_database(server: str = SERVER, admin_db: str = "test") -> Iterator[str]:
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


def _suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Twelve parameters, suggested as a sweep's space suggests them."""
    ints = {"hidden_layers": (0, 3, 1), "units": (32, 1024, 32), "layer_1_units": (32, 1024, 32),
            "layer_2_units": (32, 1024, 32)}
    floats = {"dropout": (0.0, 0.5, 0.1, False), "learning_rate": (1e-4, 1e-1, None, True),
              "weight_decay": (1e-6, 1e-2, None, True), "label_smoothing": (0.0, 0.2, None, False)}
    choices = {"optimizer": ["sgd", "adam", "adamw", "rmsprop"], "batch_size": [32, 64, 128, 256],
               "activation": ["relu", "gelu", "tanh"], "batch_norm": [False, True]}
    params = {k: trial.suggest_int(k, low, high, step=step) for k, (low, high, step) in ints.items()}
    params |= {k: trial.suggest_float(k, low, high, step=step, log=log) for k, (low, high, step, log) in floats.items()}
    return params | {k: trial.suggest_categorical(k, v) for k, v in choices.items()}


def _objective(trial: optuna.Trial, worker: int, report_every: int = 1) -> float:
    """A sweep trial's storage traffic (mnist_sweep.objective), with a sleep for the training."""
    trial.study.get_trials(deepcopy=False, states=_DONE)  # the surplus check
    trial.set_user_attr("worker", worker)
    params = _suggest(trial)
    is_enqueued(trial)
    trial.set_user_attr("n_params", 784 * params["units"] + params["layer_1_units"] * params["layer_2_units"])
    history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        time.sleep(EPOCH_SLEEP_S)
        accuracy = 1 - 0.5 / (epoch + 1) - params["dropout"] / 10
        for key, value in zip(history, (1 - accuracy, accuracy, 1.05 - accuracy, accuracy - 0.01), strict=True):
            history[key].append(round(value, 6))
        if (epoch + 1) % report_every:
            continue
        trial.report(history["val_accuracy"][-1], step=epoch + 1)
        if epoch + 1 < EPOCHS and trial.should_prune():
            raise optuna.TrialPruned()
    fit = time.perf_counter() - start
    for key, value in (("fit_seconds", round(fit, 4)), ("history", history), ("epochs_run", EPOCHS),
                       ("epoch_seconds", [round(fit / EPOCHS, 4)] * EPOCHS), ("seconds_per_epoch", fit / EPOCHS)):
        trial.set_user_attr(key, value)
    return max(history["val_accuracy"])


def _worker(target: str | tuple[str, int], study_name: str, index: int, n_trials: int, heartbeat: bool,
            sampler: str, report_every: int, barrier: Any, results: Any) -> None:
    """One worker process: get ready, wait for the others, run ``n_trials`` trials, send the figures."""
    try:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if isinstance(target, tuple):
            rdb, storage = None, optuna.storages.GrpcStorageProxy(host=target[0], port=target[1])
            storage.wait_server_ready(timeout=60)
        else:  # as a sweep opens it, with the sweep's default heartbeat
            rdb = storage = open_storage(target, HeartbeatConfig() if heartbeat else None)
        seed = 1000 + index
        study = optuna.load_study(
            study_name=study_name, storage=storage, pruner=optuna.pruners.MedianPruner(5, n_warmup_steps=EPOCHS),
            sampler=optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed))
        top, low, rows = _Clock(), _Clock(), []
        _time_storage(study_storage(study), top)
        if rdb is not None:
            _time_storage(rdb, low)
        barrier.wait(timeout=_READY_TIMEOUT_S)
        began = time.monotonic()
        for _ in range(n_trials):
            top.take()
            low.take()
            start = time.perf_counter()
            study.get_trials(deepcopy=False)  # the sweep loop's count before every trial
            study.optimize(lambda t: _objective(t, index, report_every), n_trials=1, gc_after_trial=False)
            wall = time.perf_counter() - start
            ((seconds, cpu, calls), background), rdb_seconds = top.take(), low.take()[0][0]
            rows.append((seconds, rdb_seconds if rdb is not None else None, calls, wall, background, cpu))
        results.put(("ok", index, began, time.monotonic(), rows))
    except BaseException:  # noqa: B036 (the parent must hear of any end)
        barrier.abort()  # nobody waits for this one
        results.put(("error", index, 0.0, 0.0, traceback.format_exc()))


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
    epochs) and measure them.

    Raises:
        RuntimeError: a worker failed (its traceback is in the message) or the study does not
            hold exactly ``workers * trials_per_worker`` COMPLETE trials.
    """
    name = f"bench-{label.replace(' ', '-')}-w{workers}-{secrets.token_hex(2)}"
    optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers + 1), ctx.Queue()  # the workers and this process
    procs = [ctx.Process(target=_worker, args=(proxy or url, name, i, trials_per_worker, heartbeat, sampler,
                                               report_every, barrier, results), daemon=True) for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=_READY_TIMEOUT_S)
    except threading.BrokenBarrierError:
        pass  # a worker failed: its reply says why
    before, replies, after = _cpu_ticks(), _collect(procs, results), _cpu_ticks()
    errors = [r[4] for r in replies if r[0] == "error"]
    if errors:
        raise RuntimeError(f"{len(errors)} of {workers} workers failed; the first:\n{errors[0]}")
    rows = [row for reply in replies for row in reply[4]]
    seconds = max(r[3] for r in replies) - min(r[2] for r in replies)
    done = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(states=_DONE[:1])
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
    """``python -m mnist_sweep.bench_storage``: measure in a temporary database, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m mnist_sweep.bench_storage", description=__doc__.splitlines()[0])
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
