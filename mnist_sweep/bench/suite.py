"""``python -m mnist_sweep bench``: how fast and how good a sweep is on this machine, measured.

Six measurements, each in fresh processes or fresh studies, all in one run:

1. **Epoch throughput** of the tutorial's model 4 (784-512-512-10, dropout 0.3, Adam) on 48,000
   training + 12,000 validation images: the tutorial's own code path against our trainer (both
   Keras backends), at batch 128 (and 32, 512), against the machine's FLOP bound: the model's
   forward + backward FLOPs divided by the sgemm GFLOP/s numpy reaches in the same run on the
   model's own matrix shapes at batch 128.
2. **Search efficiency**: epochs and seconds until a sweep first reaches a validation accuracy
   threshold, with the default sweep's pruner and without one (same sampler, same seeds;
   median of 3 seeds). ``--fast`` (the default) uses a data subset and a lower threshold.
3. **Parallel scaling**: trials/hour of 1 vs 2 local workers running the same 96 enqueued
   quick-sweep configs (:mod:`mnist_sweep.bench.parallel`).
4. **Framework overhead**: seconds per trial spent outside ``fit`` (study I/O, model build).
5. **Anytime quality**: ``sweeps/default.yaml`` run for 15 minutes; when it first reaches 0.980
   validation accuracy and its best validation accuracy at 15 minutes.
6. **Packed trials** (:mod:`mnist_sweep.bench.packed`): model 4's epoch on the sweep's path against a
   member-epoch of K packed in one program, and trials per hour of short trials packed against one at a time.

Each part writes in a temporary folder of its own (:mod:`mnist_sweep.bench._scratch`), removed when
it ends: nothing lands in the caller's working directory or its ``studies/``.

Example:
    $ python -m mnist_sweep bench --json > bench.json
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from mnist_sweep._base.settings import resolve_backend, use_backend
from mnist_sweep.bench._scratch import child_env, keep_models_in, scratch_dir
from mnist_sweep.bench.flops import flop_bound_epoch_s, peak_sgemm_gflops, sgemm_gflops
from mnist_sweep.bench.packed import bench_packed
from mnist_sweep.bench.parallel import bench_parallel, log, shipped_sweep
from mnist_sweep.data.dataset import load_dataset
from mnist_sweep.model.factory import TUTORIAL_MODELS
from mnist_sweep.results.anytime import Crossing, best_so_far, first_crossing, first_reach
from mnist_sweep.search.objective import Objective
from mnist_sweep.search.samplers import make_pruner, make_sampler
from mnist_sweep.sweep.config import parse_sweep
from mnist_sweep.sweep.loader import load_sweep

#: The bench's parts, as ``--only`` names them.
PARTS = ("throughput", "parallel", "pruning", "anytime", "packed")

#: (key, comparison, target) — the issue's targets, printed next to each figure.
TARGETS: list[tuple[str, str, float]] = [
    ("epoch_speedup_vs_tutorial", ">=", 1.8),
    ("epoch_vs_flop_bound", "<=", 1.6),
    ("pruning_epoch_ratio", "<=", 1 / 3),
    ("two_worker_scaling", ">=", 1.6),
    ("overhead_s_per_trial", "<", 0.5),
    ("augmentation_cost", "<=", 0.15),
    ("default_time_to_val_0980_s", "<=", 150),
    ("default_best_val_15min", ">=", 0.985),
    ("packed_vs_one_trial", "<=", 1.1),
    ("packed_trials_speedup", ">=", 2.0),
]


def _probe(path: str, backend: str, batch_size: int, epochs: int) -> dict[str, Any]:
    """One ``_epoch_probe`` run in a fresh process: its JSON (``epoch_s``, and ``augmented_epoch_s``
    for the ``augmentation`` path), run in a scratch folder."""
    cmd = [sys.executable, "-m", "mnist_sweep.bench._epoch_probe", path, "--backend", backend,
           "--batch-size", str(batch_size), "--epochs", str(epochs)]
    with scratch_dir() as tmp:
        env = child_env(tmp, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("KERAS_BACKEND", None)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=tmp)
    if out.returncode != 0:
        raise RuntimeError(f"epoch probe failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_throughput(backends: Sequence[str], batch_sizes: Sequence[int] = (128, 32, 512),
                     epochs: int = 4, rounds: int = 2, augmentation_epochs: int = 8) -> dict[str, Any]:
    """Seconds per epoch, tutorial path vs ours, per backend and batch size, and the FLOP bound.

    Each figure is the fastest epoch over ``rounds`` fresh processes per path, the paths
    interleaved (tutorial, ours, tutorial, ours, ...): on a shared machine whose speed drifts by
    tens of percent from one minute to the next, a single probe per path compares two moments,
    not two code paths. Augmentation's cost is a ratio of two figures of ours, so it is measured
    closer still: both models in one process, their epochs paired (``_epoch_probe augmentation``),
    ``rounds`` such processes of ``augmentation_epochs`` pairs at batch 128; the cost is the median
    of the pairs' ratios, not a ratio of two fastest epochs that may come from different moments.
    """
    default_backend = resolve_backend("auto")
    params = TUTORIAL_MODELS[3]
    gflops = sgemm_gflops(params, batch_size=128)
    bound = flop_bound_epoch_s(params, 48000, 12000, gflops)
    table: dict[str, dict[str, float]] = {}
    ratios: list[float] = []
    for batch in batch_sizes:
        paths = [("tutorial_tensorflow", "tutorial", "tensorflow")]
        paths += [(f"ours_{backend}", "ours", backend) for backend in backends]
        row: dict[str, float] = {}
        for _ in range(rounds):
            for key, path, backend in paths:
                row[key] = min(row.get(key, math.inf), _probe(path, backend, batch, epochs)["epoch_s"])
            if batch == 128:
                pair = _probe("augmentation", default_backend, batch, augmentation_epochs)
                ratios += pair["pair_ratios"]
                for key, figure in (("paired", "epoch_s"), ("augmented", "augmented_epoch_s")):
                    name = f"ours_{default_backend}_{key}"
                    row[name] = min(row.get(name, math.inf), pair[figure])
        table[str(batch)] = row
        log(f"batch {batch}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()))
    tutorial = table["128"]["tutorial_tensorflow"]
    ours = table["128"][f"ours_{default_backend}"]
    augmented = table["128"][f"ours_{default_backend}_augmented"]
    return {
        "augmented_epoch_s": round(augmented, 3),
        "augmentation_cost": round(statistics.median(ratios) - 1, 3),
        "augmentation_pair_ratios": [round(r, 3) for r in ratios],
        "backend": default_backend,
        "sgemm_gflops": round(gflops, 1),
        "peak_sgemm_gflops": round(peak_sgemm_gflops(), 1),
        "tutorial_epoch_s": round(tutorial, 3),
        "epoch_s": round(ours, 3),
        "epoch_speedup_vs_tutorial": round(tutorial / ours, 3),
        "flop_bound_epoch_s": round(bound, 3),
        "epoch_vs_flop_bound": round(ours / bound, 3),
        "epoch_s_by_batch": table,
    }


def _efficiency_sweep(seed: int, pruned: bool, fast: bool, max_trials: int,
                      pruner: Mapping[str, Any] | None = None, epochs: int = 30) -> dict[str, Any]:
    default = load_sweep(shipped_sweep("default"))
    data = {"validation_size": 5000, "train_size": 10000} if fast else {}
    raw = {
        "name": f"efficiency-{seed}-{'pruned' if pruned else 'unpruned'}",
        "trials": max_trials, "seed": seed,
        "sampler": {"name": "tpe", "n_startup_trials": 5},
        "pruner": (dict(pruner or default.pruner.model_dump())) if pruned else {"name": "none"},
        "data": data,
        "space": {
            "hidden_layers": {"low": 0, "high": 2}, "units": [64, 128, 256, 512],
            "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}, "optimizer": ["sgd", "adam"],
            "batch_size": [64, 128], "epochs": epochs,
            "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
        },
    }
    return raw


def bench_pruning(fast: bool, seeds: Sequence[int] = (0, 1, 2), max_trials: int = 40,
                  pruner: Mapping[str, Any] | None = None, epochs: int = 30) -> dict[str, Any]:
    """Epochs and wall time to a validation threshold with the default pruner vs none; median of seeds.

    The studies live in this process's memory; the models they keep go to a scratch folder, removed after.
    """
    backend = use_backend("auto")  # the backend a user's sweep runs on, not Keras's own default
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threshold = 0.955 if fast else 0.980
    results: dict[str, list[Crossing]] = {"pruned": [], "unpruned": []}
    dataset = None

    def stop_at_threshold(study: optuna.Study, trial: Any) -> None:
        if max(trial.intermediate_values.values(), default=0.0) >= threshold:
            study.stop()

    with scratch_dir() as tmp:
        for seed in seeds:
            for arm in ("pruned", "unpruned"):
                raw = _efficiency_sweep(seed, arm == "pruned", fast, max_trials, pruner, epochs)
                sweep = parse_sweep(raw, "bench")
                dataset = dataset or load_dataset(sweep.data)
                study = optuna.create_study(direction="maximize", sampler=make_sampler(sweep),
                                            pruner=make_pruner(sweep))
                keep_models_in(study, Path(tmp) / raw["name"])
                study.optimize(Objective(sweep, dataset), n_trials=max_trials, callbacks=[stop_at_threshold],
                               catch=(Exception,))
                done = [t for t in study.trials if t.state.is_finished()]
                crossing = first_crossing(done, threshold)
                results[arm].append(crossing)
                log(f"pruning seed {seed} {arm}: {crossing.epochs} epochs, "
                    f"{crossing.seconds and round(crossing.seconds)}s, {crossing.trials} trials")

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if len(known) == len(values) else None

    out: dict[str, Any] = {"threshold": threshold, "fast": fast, "pruning_backend": backend}
    for arm, crossings in results.items():
        out[f"{arm}_epochs"] = median([c.epochs for c in crossings])
        out[f"{arm}_seconds"] = median([c.seconds for c in crossings])
    if out["pruned_epochs"] and out["unpruned_epochs"]:
        out["pruning_epoch_ratio"] = round(out["pruned_epochs"] / out["unpruned_epochs"], 3)
        out["pruning_time_ratio"] = round(out["pruned_seconds"] / out["unpruned_seconds"], 3)
    return out


def bench_anytime(seconds: float = 900.0, sweep: str = "default") -> dict[str, Any]:
    """Run ``sweep`` for ``seconds`` (then Ctrl-C), and read best validation accuracy against wall time.

    The run starts in a scratch folder (its storage, kept models and compilation cache), removed after.
    """
    with scratch_dir() as tmp:
        storage = f"sqlite:///{tmp}/anytime.db"
        cmd = [sys.executable, "-m", "mnist_sweep", "run", shipped_sweep(sweep), "--storage", storage]
        launched = datetime.datetime.now()  # the clock Optuna stamps trials with: start-up time counts
        env = child_env(tmp)  # a cold compilation cache, as a new user's
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp,
                                env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        started = time.monotonic()
        try:
            proc.wait(timeout=seconds + 60)  # process start-up and data loading come on top of the budget
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        wall = time.monotonic() - started
        study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
        trials = [t for t in study.trials if t.intermediate_values]
        curve = best_so_far(trials, origin=launched)
    within = [p.value for p in curve if p.seconds <= seconds]
    first_980 = first_reach(curve, 0.980)
    return {
        "default_time_to_val_0980_s": round(first_980, 1) if first_980 is not None else None,
        "default_best_val_15min": round(max(within), 4) if within else None,
        "default_trials_15min": len(trials),
        "default_wall_s": round(wall),
        "default_curve": [[round(p.seconds, 1), round(p.value, 4)] for p in curve],
    }


def run_bench(fast: bool = True, parts: Sequence[str] = PARTS,
              anytime_seconds: float = 900.0, members: int | None = None) -> dict[str, Any]:
    """Every measurement in one run; returns one flat-ish dict (nested tables under their own keys).

    Each part writes only in a temporary folder of its own, removed when it ends (nothing in the
    caller's working directory); the pruning part's compilations go to the JAX compilation cache
    a sweep in this process would use.
    """
    backends = ["tensorflow"] + (["jax"] if importlib.util.find_spec("jax") else [])
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    started = time.monotonic()
    if "throughput" in parts:
        results.update(bench_throughput(backends))
    if "parallel" in parts:
        results.update(bench_parallel())
    if "anytime" in parts:
        results.update(bench_anytime(anytime_seconds))
    if "packed" in parts:  # in a child process; its epoch_s (the sweep's path) yields to the throughput part's
        packed = bench_packed(members)
        results.update({k: v for k, v in packed.items() if k not in results})
    if "pruning" in parts:  # last: it loads Keras in this process, and forking a process with JAX loaded can hang
        results.update(bench_pruning(fast))
    results["bench_seconds"] = round(time.monotonic() - started)
    return results


def format_table(results: Mapping[str, Any]) -> str:
    """The figures with their targets, one per line."""
    lines = [f"{'figure':32} {'value':>10}  target    ok"]
    for key, op, target in TARGETS:
        value = results.get(key)
        if isinstance(value, (int, float)):
            ok = value >= target if op == ">=" else value <= target if op == "<=" else value < target
            lines.append(f"{key:32} {value:>10.4g}  {op} {target:<6.4g} {'yes' if ok else 'NO'}")
        else:
            lines.append(f"{key:32} {'n/a':>10}  {op} {target:<6.4g} not measured")
    for key in ("tutorial_epoch_s", "epoch_s", "augmented_epoch_s", "flop_bound_epoch_s", "sgemm_gflops",
                "peak_sgemm_gflops", "trials_per_hour_1_worker", "trials_per_hour_2_workers", "cores_busy_1_worker",
                "cores_busy_2_workers", "pruned_epochs", "unpruned_epochs", "packed_device", "packed_members",
                "packed_engine_epoch_s", "packed_member_epoch_s", "storage_report_s_per_pack_epoch",
                "bench_seconds"):
        if key in results:
            lines.append(f"{key:32} {results[key]!s:>10}")
    if "epoch_s_by_batch" in results:
        for batch, row in results["epoch_s_by_batch"].items():
            lines.append(f"  batch {batch:>4}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()))
    return "\n".join(lines)


#: :func:`format_table` under the name the package exports (``mnist_sweep.format_bench``).
format_bench = format_table
