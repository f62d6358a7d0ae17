"""Studies: storages, samplers, pruners, resuming, and the sweep loop.

A sweep's target is a total held in the storage, not a per-call ``n_trials``: ``trials: 20``
means the study should end with 20 COMPLETE + PRUNED trials. Running the sweep again resumes
it and runs only what is missing; FAILed trials (crashes, interrupts, dead workers) do not count,
so they are replaced. Several workers can share a study (Optuna's own distributed mode: one RDB
storage); each checks the count in the storage before every trial.

The study keeps the sweep's fingerprint (search space, data, direction) in its user attributes;
resuming it with a different one is refused.

Example:
    >>> sweep = load_sweep("sweeps/quick.yaml")
    >>> study = run_sweep(sweep, storage="sqlite:///studies/mnist_sweep.db")
    >>> study.best_value
"""

from __future__ import annotations

import datetime
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._rdb import models as _rdb_models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import update

from mnist_sweep.config import Axis, HeartbeatConfig, SweepConfig
from mnist_sweep.data import Dataset, load_dataset
from mnist_sweep.errors import InputError
from mnist_sweep.objective import INT_AXES, Objective

DEFAULT_STORAGE = "sqlite:///studies/mnist_sweep.db"
STORAGE_ENV = "MNIST_SWEEP_STORAGE"
SQLITE_TIMEOUT_S = 300  # Optuna's own test helper uses 300 s; a short one kills the heartbeat thread (#4994)
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(value: str | None = None) -> str:
    """``--storage`` if given, else ``$MNIST_SWEEP_STORAGE``, else ``sqlite:///studies/mnist_sweep.db``."""
    return value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The storage URL with any password masked, for printing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


class ClaimingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose WAITING -> RUNNING move is one conditional ``UPDATE``.

    Why: a worker takes an enqueued (WAITING) trial through ``set_trial_state_values(RUNNING)``,
    which Optuna implements as ``SELECT ... FOR UPDATE`` then a write. SQLite ignores ``FOR
    UPDATE`` and Python's sqlite3 runs that read outside the write transaction, so two workers
    popping at the same moment both see WAITING and both run the trial; the slower one then dies
    with "Cannot tell a COMPLETE trial" (4 threads claiming 100 enqueued trials: 69 claimed twice;
    seen in ``run --jobs 2`` on the bench's 48 enqueued configs). ``UPDATE ... WHERE state =
    'WAITING'`` is a compare-and-set on every database: one claimer changes the row, the others
    change none and get False, as Optuna's contract says.
    """

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        trials = _rdb_models.TrialModel.__table__  # Optuna's table, with its column types (enum, datetime)
        claim = (update(trials)
                 .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                 .values(state=TrialState.RUNNING, datetime_start=datetime.datetime.now()))
        with self.engine.begin() as connection:
            if connection.execute(claim).rowcount == 1:
                return True
        self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)  # finished: raises
        return False  # another worker took it


def open_storage(url: str, heartbeat: HeartbeatConfig | None = None, create: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage with a generous SQLite busy timeout, an atomic claim of enqueued trials
    (:class:`ClaimingRDBStorage`) and, if asked, heartbeats with retries.

    Args:
        url: an SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``).
        heartbeat: heartbeat settings; ``None`` turns heartbeats off (read-only commands).
        create: for SQLite, create the file's folder; when False a missing file is an error.

    Raises:
        InputError: the storage cannot be opened or reached.
    """
    engine_kwargs: dict[str, Any] = {}
    sqlite_file = False
    if url.startswith("sqlite:"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        sqlite_file = bool(path) and path != ":memory:"
        if sqlite_file:
            if not create and not Path(path).is_file():
                raise InputError(f"{url}: no such storage file")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.grace_period or 3 * heartbeat.interval,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=heartbeat.max_retries
            ),
        }
    try:
        storage = ClaimingRDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as err:
        raise InputError(
            f"{redact(url)}: missing database driver ({err.name or err}); try pip install -e '.[postgres]'"
        ) from None
    except Exception as err:  # noqa: BLE001 - sqlalchemy raises many kinds; all mean "cannot open"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{redact(url)}: cannot open storage ({first})") from None
    if sqlite_file:
        _use_wal(storage)
    return storage


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging for every connection: readers (the dashboard, ``status``, the sampler's
    reads) no longer block the writer, and a commit appends to the log without an fsync
    (``synchronous=NORMAL``: durable at checkpoints; a power cut can lose the last commits, never
    corrupt the file). Parallel workers on one SQLite file wait far less for each other's locks."""
    from sqlalchemy import event

    def pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()


def make_sampler(sweep: SweepConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded with ``sampler.seed`` or the sweep's seed.

    ``worker`` (0, 1, ...) offsets the seed of the random and model-based samplers, so parallel
    workers sharing a study do not propose the same configs at the same moment. QMC and grid keep
    the one seed: their workers index one shared sequence by trial number.
    """
    cfg = sweep.sampler
    seed = cfg.seed if cfg.seed is not None else sweep.seed
    if cfg.name not in ("qmc", "grid") and seed is not None:
        seed += worker
    if cfg.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials,
                                          multivariate=cfg.multivariate, constant_liar=cfg.constant_liar)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "grid":
        return optuna.samplers.GridSampler(_grid(sweep), seed=seed)
    if cfg.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
    if cfg.name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, qmc_type=cfg.qmc_type, scramble=cfg.scramble)
    if cfg.name == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
        except ImportError:
            raise InputError("sampler.name: 'gp' needs PyTorch (pip install torch)") from None
    raise AssertionError(cfg.name)


def _grid(sweep: SweepConfig) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, axis in sweep.space.axes().items():
        if isinstance(axis, Axis) and axis.ranged:
            if axis.step is None and name not in INT_AXES:
                raise InputError(f"space.{name}: the grid sampler needs 'choices' or a 'step' on a float range")
            step = axis.step or 1
            count = int(round((axis.high - axis.low) / step)) + 1
            grid[name] = [round(axis.low + i * step, 10) for i in range(count)]
        else:
            grid[name] = list(axis.choices) if axis.choices is not None else [axis.value]
    return grid


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    """The sweep's pruner; steps are epochs."""
    cfg = sweep.pruner
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials,
                                           n_warmup_steps=cfg.n_warmup_steps, interval_steps=cfg.interval_steps)
    if cfg.name == "hyperband":
        max_resource = cfg.max_resource
        epochs = sweep.space.epochs
        if max_resource == "auto" and epochs.ranged:
            max_resource = epochs.high
        elif max_resource == "auto":
            max_resource = max(epochs.choices or [epochs.value])
        return optuna.pruners.HyperbandPruner(min_resource=cfg.min_resource, max_resource=max_resource,
                                              reduction_factor=cfg.reduction_factor)
    if cfg.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_resource,
                                                      reduction_factor=cfg.reduction_factor,
                                                      min_early_stopping_rate=cfg.min_early_stopping_rate)
    raise AssertionError(cfg.name)


def open_study(
    sweep: SweepConfig, storage: str | optuna.storages.BaseStorage, study_name: str | None = None, worker: int = 0
) -> optuna.Study:
    """Create the sweep's study (enqueueing its ``enqueue:`` trials) or resume it.

    Raises:
        InputError: the stored study was made from a different search space or data.
    """
    name = study_name or sweep.name
    sampler, pruner = make_sampler(sweep, worker), make_pruner(sweep)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        _check_resumable(study, sweep)
        return study
    study.set_user_attr("sweep_fingerprint", sweep.fingerprint())
    study.set_user_attr("sweep", sweep.model_dump(mode="json"))
    for params in sweep.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    return study


def _check_resumable(study: optuna.Study, sweep: SweepConfig) -> None:
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise InputError(f"study '{study.study_name}': stored direction is {study.direction.name}, "
                         "mnist_sweep maximises validation accuracy; use --study NEW or --new-study")
    stored = study.user_attrs.get("sweep_fingerprint")
    if stored is not None and stored != sweep.fingerprint():
        old = study.user_attrs.get("sweep", {})
        changed = [k for k in ("space", "data") if old.get(k) != sweep.model_dump(mode="json")[k]]
        raise InputError(
            f"study '{study.study_name}' was made from a different sweep ({' and '.join(changed) or 'space'} "
            "changed); resuming would mix incomparable trials: use --study NEW or --new-study"
        )


def count_states(study: optuna.Study) -> Counter[str]:
    """Number of trials per state name, read from the storage."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def load_existing(url: str, name: str | None = None) -> optuna.Study:
    """Load a stored study for reading (report, dashboard, export), creating nothing.

    ``name`` may be left out when the storage holds exactly one study.

    Example:
        >>> load_existing("sqlite:///studies/mnist_sweep.db", "quick").best_value

    Raises:
        InputError: the storage does not exist or cannot be opened, it holds no studies, or ``name``
            is missing (several studies) or unknown; the message lists the studies there are.
    """
    storage = open_storage(url, create=False)
    names = sorted(optuna.get_all_study_names(storage))
    if not names:
        raise InputError(f"{redact(url)}: no studies yet (start one with: python -m mnist_sweep run quick)")
    if name is None:
        if len(names) > 1:
            raise InputError(f"{redact(url)} holds {len(names)} studies, pick one with --study: {', '.join(names)}")
        name = names[0]
    elif name not in names:
        raise InputError(f"no study '{name}' in {redact(url)}; available: {', '.join(names)}")
    return optuna.load_study(study_name=name, storage=storage)


def run_sweep(
    sweep: SweepConfig,
    storage: str,
    study_name: str | None = None,
    dataset: Dataset | None = None,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    on_start: Callable[[optuna.Trial], None] | None = None,
    heartbeat: bool = True,
    worker: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> optuna.Study:
    """Run (or resume) ``sweep`` until its study holds ``sweep.trials`` COMPLETE + PRUNED trials.

    Everything that can be wrong with the input (sampler, data) is checked before the storage is
    touched. Stops early at ``sweep.timeout`` seconds, or when more trials have failed in this run
    than the target (a config that always crashes should not loop forever).

    Args:
        sweep: the validated sweep.
        storage: an RDB URL (see :func:`storage_url`).
        study_name: default: ``sweep.name``.
        dataset: already loaded data; default: loaded here once, as ``sweep.data`` says.
        on_trial: called after each finished trial (the CLI prints a line).
        on_start: called as each trial starts.
        heartbeat: send Optuna heartbeats so a dead worker's trial is failed and retried. Without
            them a RUNNING trial of another process may be dead, so this loop does not wait for it.
        worker: this worker's index when several share the study (offsets the sampler seed).
        should_stop: asked before each trial and after each epoch; ``True`` ends the loop and
            interrupts the running trial (e.g. a signal was received).
    """
    make_sampler(sweep)
    dataset = dataset if dataset is not None else load_dataset(sweep.data)
    rdb = open_storage(storage, sweep.heartbeat if heartbeat else None)
    study = open_study(sweep, rdb, study_name, worker)
    reap_dead_trials(study, rdb)  # Optuna reaps only when a trial starts; reap at start-up too
    objective = Objective(sweep, dataset, target_trials=sweep.trials, on_start=on_start, should_stop=should_stop)
    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    started = time.monotonic()
    failed_here = 0
    while True:
        counts = count_states(study)
        done = sum(counts[s.name] for s in DONE_STATES)
        if done >= sweep.trials:
            break
        if sweep.timeout is not None and time.monotonic() - started >= sweep.timeout:
            break
        if failed_here > max(3, sweep.trials):
            break
        if should_stop is not None and should_stop():
            break
        if done + counts["RUNNING"] >= sweep.trials:
            if not heartbeat:
                break
            time.sleep(min(2.0, sweep.heartbeat.interval))  # others are finishing the target; a failure
            reap_dead_trials(study, rdb)  # there (or a dead worker's trial) is ours to replace
            continue
        before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
        failed_here += len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - before
    reap_dead_trials(study, rdb)
    return study


def reap_dead_trials(study: optuna.Study, rdb: optuna.storages.RDBStorage) -> list[int]:
    """Fail the RUNNING trials of dead workers; returns the numbers of the trials failed here.

    Optuna's ``fail_stale_trials`` fails (and retries) trials whose last heartbeat is older than
    the grace period, but skips trials that never recorded one. A worker killed between creating
    its trial and its first heartbeat (a fraction of a second) would so leave a trial RUNNING
    forever, and a run waiting for the last trials of its target would wait forever. Every
    mnist_sweep worker records a heartbeat as its trial starts, so a RUNNING trial without any,
    started more than the storage's grace period ago, is dead: it is failed too, and its config
    is queued again if it was an enqueued one. A storage without heartbeats does nothing.
    """
    if rdb.heartbeat_interval is None:
        return []
    optuna.storages.fail_stale_trials(study)
    utc_now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)  # Optuna 5 stores UTC
    started_before = utc_now - datetime.timedelta(seconds=rdb.grace_period or 2 * rdb.heartbeat_interval)
    storage, failed = study._storage, []
    for trial_id in _running_without_heartbeat(rdb, study._study_id, started_before):
        trial = storage.get_trial(trial_id)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", "worker died before its first heartbeat")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker reaped it first
            continue
        failed.append(trial.number)
        if trial.system_attrs.get("fixed_params"):
            study.enqueue_trial(trial.system_attrs["fixed_params"])
    return failed


def _running_without_heartbeat(rdb: optuna.storages.RDBStorage, study_id: int,
                               started_before: datetime.datetime) -> list[int]:
    import sqlalchemy.orm
    from optuna.storages._rdb import models

    with sqlalchemy.orm.Session(rdb.engine) as session:
        rows = (session.query(models.TrialModel.trial_id)
                .outerjoin(models.TrialHeartbeatModel,
                           models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id,
                        models.TrialModel.state == TrialState.RUNNING,
                        models.TrialModel._datetime_start_utc < started_before,
                        models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                .all())
    return [row[0] for row in rows]
