"""``run``: a whole sweep as one call, the same path for ``python -m mnist_sweep run`` and a notebook.

:func:`run` does everything a sweep needs around the sweep loop
(:func:`mnist_sweep.search.loop.run_sweep`): it prepares the process (the fast Keras backend where
installed, JAX's compilation cache, thread pools, log levels), loads the data once, records the
study's provenance, shows progress (a line per trial, live epochs), stops cleanly on Ctrl-C or
SIGTERM (the running trial failed, nothing left RUNNING) and, with ``jobs > 1``, runs that many
worker processes on the study. The CLI's ``run`` and ``worker`` commands call it and print.

Example:
    >>> import mnist_sweep as ms
    >>> study = ms.run(ms.load_sweep("quick"), storage="sqlite:///studies/mnist_sweep.db")
    >>> study.best_value
    0.9432
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import optuna

from mnist_sweep._base.devices import accelerators, accelerators_in_child, describe_devices, visible_gpu_ids
from mnist_sweep._base.paths import storage_url
from mnist_sweep._base.provenance import collect
from mnist_sweep._base.settings import (
    freeze_long_lived_objects,
    limit_threads,
    pin_to_cpus,
    prepare_process,
)
from mnist_sweep._base.signals import StopSignals
from mnist_sweep.data.dataset import load_dataset
from mnist_sweep.errors import InputError, StorageUnavailable, SweepFailed, SweepInterrupted
from mnist_sweep.model.factory import pooled_blocks_that_fit
from mnist_sweep.search.loop import LoopOptions, run_sweep
from mnist_sweep.search.progress import EpochProgress, TrialLines, print_summary
from mnist_sweep.search.study import DONE_STATES, open_study
from mnist_sweep.search.workers import run_workers, worker_argv, worker_places
from mnist_sweep.storage._optuna_internals import fail_if_running
from mnist_sweep.storage.rdb import open_storage, redact
from mnist_sweep.sweep.config import SweepConfig
from mnist_sweep.sweep.loader import load_sweep


def run(
    sweep: SweepConfig | str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    *,
    jobs: int = 1,
    new_study: bool = False,
    progress: str = "auto",
    worker_id: int = 0,
    threads: int | None = None,
    cpus: Sequence[int] | None = None,
    gpus: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> optuna.Study:
    """Run (or resume) a sweep until its study holds ``sweep.trials`` COMPLETE + PRUNED trials.

    Args:
        sweep: a :class:`~mnist_sweep.sweep.config.SweepConfig` (from :func:`~mnist_sweep.load_sweep`,
            :func:`~mnist_sweep.sweep_from_dict`, :func:`~mnist_sweep.with_overrides`), or a
            sweep name or path.
        storage: an Optuna RDB URL; default ``$MNIST_SWEEP_STORAGE``, else
            ``sqlite:///studies/mnist_sweep.db``.
        study_name: default: the sweep's name. An existing study of that name is resumed.
        jobs: worker processes on this machine, each pinned to its share of the cores; where JAX
            sees GPUs, spread over them instead (unpinned; see :func:`~mnist_sweep.search.workers.worker_places`).
        new_study: start a new study named ``<name>-<timestamp>`` instead of resuming.
        progress: ``auto``, ``terminal``, ``notebook``, ``plain`` or ``off`` (the live epochs;
            see :mod:`mnist_sweep.search.progress`); ``off`` prints nothing at all.
        worker_id: offsets the sampler seed (workers sharing a study propose different configs).
        threads, cpus: limit this process's thread pools, pin it to these cores (workers).
        gpus: the GPUs the ``jobs`` workers are spread over, as ``CUDA_VISIBLE_DEVICES`` names them
            (default: every one JAX sees).
        out: where progress goes (default standard output).

    Returns:
        The study, as it stands when the target is reached or the sweep's timeout passed.

    Raises:
        InputError: bad input (the sweep, its data, the storage); nothing was written.
        SweepInterrupted: Ctrl-C or SIGTERM; the running trial was failed and the study is on
            the exception (``err.study``); running the same sweep again resumes.
        SweepFailed: trials kept failing (crashed), with the first one's traceback, or the run
            ended with no finished trial.
        StorageUnavailable: the storage stopped answering for longer than ``sweep.storage_retry``
            (or its disk is full) while the sweep ran; the same call resumes once it is back.
    """

    sweep = sweep if isinstance(sweep, SweepConfig) else load_sweep(sweep)
    if cpus:
        pin_to_cpus(cpus)  # both before Keras (and its runtime) is imported
    threads = threads or (len(cpus) if cpus else None)
    if threads:
        limit_threads(threads)
    backend = prepare_process(sweep.training.backend, threads)
    # the parent of workers trains nothing: asked in a child, no GPU memory stays held under them
    devices = accelerators_in_child(backend) if jobs > 1 else accelerators(backend)
    gpu_ids = _gpu_ids(gpus, jobs, [d for d in devices if d.platform == "gpu"])


    url = storage_url(storage)
    name = study_name or sweep.name
    if new_study:
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    dataset = load_dataset(sweep.data)
    _check_cnn_fits(sweep, dataset.side)
    provenance = collect(dataset, backend)
    shown = progress != "off"
    say = _printer(out, shown)
    header = (f"sweep {sweep.name}: study '{name}' in {redact(url)}, target {sweep.trials} trials; "
              f"data {dataset.describe()}; backend {backend} on {describe_devices(devices)}")
    for note in dataset.notes:  # what was done to the user's images, said once
        header += f"\n  data: {note}"
    start = time.monotonic()
    with StopSignals.installed() as stop:
        if jobs > 1:
            study = _run_jobs(sweep, url, name, jobs, provenance, header, say, gpu_ids)
        else:
            stop.polled = True  # the loop asks stop.received() between trials and after every epoch
            freeze_long_lived_objects()
            epochs = EpochProgress(progress, out=out)
            running: dict[str, Any] = {}

            def started(trial: optuna.Trial) -> None:
                running["trial"] = trial
                epochs.start(trial)

            try:
                study = run_sweep(sweep, url, study_name=name, dataset=dataset, options=LoopOptions(
                    worker=worker_id, provenance=provenance, on_open=lambda _: say(header),
                    on_trial=TrialLines(sweep.trials, out=out, before=epochs.clear) if shown else None,
                    on_start=started, on_epoch=epochs.update, should_stop=stop.received))
                if stop.received():
                    raise stop.exception()
            except KeyboardInterrupt as err:
                raise _interrupted(running.get("trial"), err, stop, name, url) from None
            finally:
                stop.polled = False
                epochs.clear()
    if shown:
        print_summary(study, time.monotonic() - start, out)
    return study


def _check_cnn_fits(sweep: SweepConfig, side: int) -> None:
    """A space whose CNNs would pool these images to nothing is refused before anything is written."""
    space = sweep.space
    poolings = [space.pooling.value] if space.pooling.fixed else list(space.pooling.choices or [])
    if not space.architecture.contains("cnn") or poolings == ["none"]:
        return
    blocks = space.conv_blocks
    most = blocks.value if blocks.fixed else blocks.high if blocks.ranged else max(blocks.choices or [0])
    fit = pooled_blocks_that_fit(side)
    if most > fit:
        raise InputError(f"sweep {sweep.name}: space.conv_blocks: up to {most} blocks of 2 x 2 pooling halve these "
                         f"{side} x {side} images to nothing; at most {fit} (or pooling: none)")


def _printer(out: TextIO | None, enabled: bool) -> Any:
    def say(line: str) -> None:
        if enabled:
            print(line, file=out or sys.stdout, flush=True)

    return say


def _interrupted(trial: optuna.Trial | None, err: KeyboardInterrupt, stop: StopSignals, name: str,
                 url: str) -> SweepInterrupted:
    """Make sure the running trial is failed (Optuna does it, unless the signal came mid-I/O)."""
    study = None
    if trial is not None:
        study = trial.study
        try:
            fail_if_running(trial, f"interrupted ({type(err).__name__})")
        except Exception as cleanup_err:  # noqa: BLE001 - best effort on the way out, and said so
            print(f"warning: could not mark trial {trial.number} failed: {cleanup_err}", file=sys.stderr)
    signum = signal.SIGTERM if stop.terminated(err) else signal.SIGINT
    return SweepInterrupted(f"interrupted: study '{name}' in {redact(url)}; run the same sweep again to resume",
                            study=study, signal=signum)


def _gpu_ids(wanted: Sequence[str] | None, jobs: int, gpus: Sequence[Any]) -> list[str]:
    """The GPUs the workers go to: ``wanted`` (``--gpus``), checked against the visible ones, else all of these."""
    visible = visible_gpu_ids(len(gpus))
    if not wanted:
        return visible
    if jobs < 2:
        raise InputError("--gpus spreads the workers of --jobs N over GPUs; for one process set CUDA_VISIBLE_DEVICES")
    unknown = [gpu for gpu in wanted if gpu not in visible]
    if unknown:
        seen = f"the visible ones are {','.join(visible)}" if visible else "JAX sees no GPU on this machine"
        raise InputError(f"--gpus: no GPU {','.join(unknown)} ({seen})")
    return list(wanted)


def _run_jobs(sweep: SweepConfig, url: str, name: str, jobs: int, provenance: dict[str, Any], header: str,
              say: Any, gpus: Sequence[str] = ()) -> optuna.Study:
    """Create the study once, then run ``jobs`` worker processes on it and wait for them."""

    rdb = open_storage(url, retry_seconds=sweep.storage_retry.seconds)
    study = open_study(sweep, rdb, name, provenance=provenance)  # enqueues the sweep's trials once
    places, split = worker_places(jobs, gpus)  # on a GPU-less machine: each on its own cores
    say(f"{header}; {jobs} workers {split}")
    with tempfile.TemporaryDirectory(prefix="mnist-sweep-") as tmp:
        sweep_file = Path(tmp) / f"{sweep.name}.json"
        sweep_file.write_text(json.dumps(sweep.model_dump(mode="json")), encoding="utf-8")
        argvs = [worker_argv(str(sweep_file), name, p.threads, i, cpus=p.cpus) for i, p in enumerate(places)]
        result = run_workers(argvs, env={"MNIST_SWEEP_STORAGE": url}, envs=[p.env for p in places])
    if result.signal is not None:
        raise SweepInterrupted(f"interrupted: study '{name}'; run the same sweep again to resume",
                               study=study, signal=result.signal)
    done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    bad = [(i, code) for i, code in enumerate(result.codes, start=1) if code != 0]
    if not bad:
        return study
    if done < sweep.trials and all(code == InputError.exit_code for _, code in bad):
        raise InputError(f"study '{name}': target not reached ({done}/{sweep.trials}): workers failed on bad "
                         "input (see their lines above)")
    if done < sweep.trials and all(code == StorageUnavailable.exit_code for _, code in bad):
        raise StorageUnavailable(f"study '{name}': target not reached ({done}/{sweep.trials}): the storage is "
                                 "unavailable (see the workers' lines above); the same command resumes")
    i, code = bad[0]
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    last = result.last_lines[i - 1] if i - 1 < len(result.last_lines) else ""
    others = f" ({len(bad) - 1} more failed: see their lines above)" if len(bad) > 1 else ""
    raise SweepFailed(f"study '{name}': worker {i} {how}{others}; its last line: {last[:200] or '(none)'} "
                      f"({done}/{sweep.trials} trials done; the same command resumes)")
    return study
