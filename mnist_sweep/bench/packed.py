"""``bench --only packed``: one trial's epoch on the sweep's path against K trials packed in one program.

Measured in a fresh process (``python -m mnist_sweep.bench.packed --members K`` prints one JSON
object), on whatever device JAX has, the tutorial's model 4 (784-512-512-10, dropout 0.3, Adam,
batch 128) on 48,000 training + 12,000 validation images:

- ``epoch_s``: one trial's epoch on the path sweeps train with (:func:`mnist_sweep.model.training.fit`,
  as the objective calls it: partial batch dropped, best weights kept);
- ``packed_engine_epoch_s``: the same trial alone on the packed engine (K = 1);
- ``packed_member_epoch_s``: K members (their own seeds, rates and dropouts) in one
  :class:`~mnist_sweep.model.packed.PackedTrainer`, seconds per member-epoch;
  K is ``--members``, by default 64 on an accelerator and 8 on a CPU;
- trials per hour of short trials (3 epochs on 20,000 + 5,000 images, the quick sweep's shapes): two
  packs of K configs against up to 8 of them one at a time through ``fit`` (building and compiling included);
- ``storage_report_s_per_pack_epoch``: K ``trial.report`` calls to an SQLite study, the storage traffic of
  a pack-epoch if every member reported every epoch, and its share of the packed epoch.

Each figure is the fastest epoch after the first (which compiles). The child runs in a scratch folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from mnist_sweep.bench._scratch import child_env, scratch_dir

#: The short trials whose trials per hour are compared: the quick sweep's shapes, 3 epochs.
SHORT_SHAPES: list[dict[str, Any]] = [{"hidden_layers": 2, "units": 128}, {"hidden_layers": 1, "units": 64}]
SHORT_DATA = {"train_size": 20000, "validation_size": 5000}
EPOCHS = 3


def bench_packed(members: int | None = None) -> dict[str, Any]:
    """The packed figures, measured in a fresh process started in a scratch folder."""
    cmd = [sys.executable, "-m", "mnist_sweep.bench.packed"] + (["--members", str(members)] if members else [])
    with scratch_dir() as tmp:
        out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(tmp, TF_CPP_MIN_LOG_LEVEL="3"),
                             check=False, cwd=tmp)
    if out.returncode != 0:
        raise RuntimeError(f"packed bench failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _member_params(base: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` members of ``base``: learning rates spread over 0.5-2x, dropouts 0.1-0.4."""
    rate = float(base.get("learning_rate") or 1e-3)
    return [{**base, "learning_rate": rate * 2 ** (2 * i / max(1, n - 1) - 1), "dropout": 0.1 * (1 + i % 4)}
            for i in range(n)]


def _build(params: dict[str, Any], seed: int, steps: int, free_memory: bool = True) -> Any:
    """The model a trial of ``params`` trains (a pack's members after the first skip the collection)."""
    from mnist_sweep.model.factory import build_model
    from mnist_sweep.model.training import fresh_keras
    from mnist_sweep.sweep.config import TrainingConfig

    fresh_keras(seed, free_memory=free_memory)
    return build_model(params, steps_per_epoch=steps, steps_per_execution=TrainingConfig().steps_per_execution)


def _fit_trial(ds: Any, params: dict[str, Any], seed: int, epochs: int) -> list[float]:
    """One trial as the sweep trains it today: epoch seconds."""
    from mnist_sweep.model.training import fit

    model = _build(params, seed, len(ds.x_train) // int(params["batch_size"]))
    return fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=int(params["batch_size"]),
               epochs=epochs, drop_remainder=True, keep_best=True).epoch_seconds


def _pack(ds: Any, members: Sequence[dict[str, Any]], epochs: int) -> list[float]:
    """One pack of ``members`` trained for ``epochs``: pack-epoch seconds."""
    from mnist_sweep.model.packed import PackedTrainer

    batch = int(members[0]["batch_size"])
    models = [_build(p, seed, len(ds.x_train) // batch, free_memory=seed == 0) for seed, p in enumerate(members)]
    trainer = PackedTrainer(models, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=batch, epochs=epochs)
    for _ in range(epochs):
        trainer.run_epoch()
    return trainer.result(0).epoch_seconds


def _fastest(seconds: list[float]) -> float:
    return min(seconds[1:] or seconds)


def _trials_per_hour(k: int, packs: int = 2) -> dict[str, Any]:
    """Short trials: ``packs`` packs of K against up to 8 of the same configs one at a time (rates: the
    first pack compiles the program the next ones reuse, as a sweep's packs of one structure do)."""
    from mnist_sweep.data.dataset import load_dataset
    from mnist_sweep.sweep.config import DataConfig
    from mnist_sweep.sweep.space import DEFAULT_PARAMS

    ds = load_dataset(DataConfig(**SHORT_DATA))
    out: dict[str, Any] = {}
    for shape in SHORT_SHAPES:
        configs = _member_params({**DEFAULT_PARAMS, **shape, "epochs": EPOCHS}, k * packs)
        alone = configs[::max(1, len(configs) // 8)][:8]
        started = time.perf_counter()
        for seed, params in enumerate(alone):
            _fit_trial(ds, params, seed, EPOCHS)
        one = len(alone) / (time.perf_counter() - started) * 3600
        started = time.perf_counter()
        for n in range(packs):
            _pack(ds, configs[n * k:(n + 1) * k], EPOCHS)
        packed = len(configs) / (time.perf_counter() - started) * 3600
        name = "x".join(str(shape["units"]) for _ in range(shape["hidden_layers"]))
        out[name] = {"one_at_a_time": round(one), "packed": round(packed), "speedup": round(packed / one, 2)}
    return out


def _storage_seconds(k: int, epochs: int = EPOCHS) -> float:
    """Seconds per pack-epoch for K members to report one value each to an SQLite study (a scratch file)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with scratch_dir() as tmp:
        study = optuna.create_study(storage=f"sqlite:///{tmp}/packed.db", direction="maximize")
        trials = [study.ask() for _ in range(k)]
        started = time.perf_counter()
        for epoch in range(epochs):
            for n, trial in enumerate(trials):
                trial.report(0.9 + n * 1e-4, step=epoch + 1)
        return (time.perf_counter() - started) / epochs


def measure(members: int | None = None) -> dict[str, Any]:
    """Every packed figure, in this process (which chooses the backend)."""
    from mnist_sweep._base.settings import use_backend

    backend = use_backend("auto")
    import jax

    from mnist_sweep.data.dataset import load_dataset
    from mnist_sweep.model.factory import TUTORIAL_MODELS
    from mnist_sweep.sweep.config import DataConfig

    device = jax.devices()[0]
    k = members or (8 if device.platform == "cpu" else 64)
    ds = load_dataset(DataConfig(validation_size=12000))
    params = {**TUTORIAL_MODELS[3]}
    sweep_path = _fit_trial(ds, params, 0, EPOCHS)
    engine = _pack(ds, [params], EPOCHS)
    packed = _pack(ds, _member_params(params, k), EPOCHS)
    epoch_s, member_s = _fastest(sweep_path), _fastest(packed) / k
    storage = _storage_seconds(k)
    short = _trials_per_hour(k)
    return {
        "packed_backend": backend, "packed_device": f"{device.platform}: {device.device_kind}", "packed_members": k,
        "epoch_s": round(epoch_s, 4), "packed_engine_epoch_s": round(_fastest(engine), 4),
        "packed_member_epoch_s": round(member_s, 5), "packed_vs_one_trial": round(member_s / epoch_s, 3),
        "packed_epoch_s": round(_fastest(packed), 4), "packed_compile_s": round(packed[0] - _fastest(packed), 2),
        "packed_trials_per_hour": short,
        "packed_trials_speedup": min(row["speedup"] for row in short.values()),
        "storage_report_s_per_pack_epoch": round(storage, 4),
        "storage_share_of_pack_epoch": round(storage / _fastest(packed), 4),
        "packed_epoch_seconds": {"sweep_path": sweep_path, "engine": engine, "packed": packed},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_sweep.bench.packed")
    parser.add_argument("--members", type=int, default=None, help="members per pack (default: 64 on an "
                        "accelerator, 8 on a CPU)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.members)))


if __name__ == "__main__":
    main()
