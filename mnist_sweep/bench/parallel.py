"""The bench's parallel part: trials/hour of 1 vs 2 local workers on the same enqueued configs.

Both arms run ``run --jobs N`` on the same 96 enqueued quick-sweep configs, each on an empty
compilation cache (about 45 s per arm: long enough that start-up, the first trials' one-off
compilations and the last trial's tail do not decide the figure), and report how many cores
they kept busy and the framework's overhead per trial.

Example:
    >>> bench_parallel()["two_worker_scaling"]
    1.63
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from mnist_sweep.bench._scratch import child_env, scratch_dir
from mnist_sweep.sweep.loader import load_sweep, packaged_dir


def shipped_sweep(name: str) -> str:
    """The path of a sweep shipped in the package: the bench measures those, not ./sweeps/ copies."""
    return str(packaged_dir() / f"{name}.yaml")


def log(message: str) -> None:
    """A bench progress line, on standard error (standard output holds the figures)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _parallel_sweep(path: Path, n_trials: int) -> None:
    """The quick sweep's space with ``n_trials`` fixed configs enqueued, so 1 and 2 workers run the same work."""
    quick = load_sweep(shipped_sweep("quick"))
    rng = np.random.default_rng(0)
    configs = [{
        "hidden_layers": int(rng.integers(0, 3)), "units": int(rng.choice([64, 128])),
        "dropout": round(float(rng.choice(np.arange(0, 0.6, 0.1))), 1), "optimizer": str(rng.choice(["sgd", "adam"])),
        "batch_size": int(rng.choice([64, 128])), "epochs": int(rng.integers(1, 5)),
        "learning_rate": float(10 ** rng.uniform(-4, -1)),
    } for _ in range(n_trials)]
    raw = quick.model_dump(mode="json", exclude={"source"})
    raw.update(name="parallel", trials=n_trials, enqueue=configs, pruner={"name": "none"})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _trials_per_hour(storage: str, name: str) -> tuple[float, float]:
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    overhead = statistics.mean(t.duration.total_seconds() - t.user_attrs.get("fit_seconds", 0.0) for t in done)
    return len(done) / span * 3600, overhead


def bench_parallel(n_trials: int = 96) -> dict[str, Any]:
    """Trials/hour of 1 and 2 workers on the same enqueued configs, and per-trial overhead.

    Both runs start in a scratch folder (their storage, kept models and compilation caches), removed after.
    """
    out: dict[str, Any] = {}
    with scratch_dir() as tmp:
        sweep = Path(tmp) / "parallel.yaml"
        _parallel_sweep(sweep, n_trials)
        for jobs in (1, 2):
            storage = f"sqlite:///{tmp}/jobs{jobs}.db"
            cmd = [sys.executable, "-m", "mnist_sweep", "run", str(sweep), "--storage", storage, "--jobs", str(jobs)]
            env = child_env(tmp, JAX_COMPILATION_CACHE_DIR=f"{tmp}/xla-{jobs}")  # both arms start cold
            cpu_before, wall_before = _children_cpu_seconds(), time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=tmp)
            cores = (_children_cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
            if proc.returncode != 0:
                raise RuntimeError(f"run --jobs {jobs} failed: {proc.stderr.strip().splitlines()[-1:]}")
            rate, overhead = _trials_per_hour(storage, "parallel")
            suffix = f"{jobs}_worker{'s' if jobs > 1 else ''}"
            out[f"trials_per_hour_{suffix}"] = round(rate)
            out[f"cores_busy_{suffix}"] = round(cores, 2)
            if jobs == 1:
                out["overhead_s_per_trial"] = round(overhead, 3)
            log(f"{jobs} worker(s): {rate:.0f} trials/hour, overhead {overhead:.3f}s/trial, "
                 f"{cores:.2f} cores busy (CPU seconds / wall seconds of the run)")
    out["two_worker_scaling"] = round(out["trials_per_hour_2_workers"] / out["trials_per_hour_1_worker"], 3)
    return out


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
