"""The bench's arithmetic (not its timings: benchmarks print figures, they are not timed tests), and
that it writes only in scratch folders of its own."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from mnist_sweep.bench import suite
from mnist_sweep.bench.flops import flop_bound_epoch_s, inference_flops_per_image, training_flops_per_image
from mnist_sweep.bench.parallel import bench_parallel
from mnist_sweep.bench.suite import TARGETS, format_table
from mnist_sweep.model.factory import TUTORIAL_MODELS


def test_flops_of_the_tutorial_model_4() -> None:
    # 668,672 multiply-accumulates: 1.34 MFLOP forward, 3.21 MFLOP forward + backward per image.
    params = TUTORIAL_MODELS[3]
    assert inference_flops_per_image(params) == 2 * 668_672
    assert training_flops_per_image(params) == pytest.approx(3.209e6, rel=1e-3)
    # 48,000 training and 12,000 validation images at 170 GFLOP/s: just under one second
    assert flop_bound_epoch_s(params, 48000, 12000, 170.0) == pytest.approx(1.0, rel=0.02)


def test_table_marks_missed_targets() -> None:
    table = format_table({"epoch_speedup_vs_tutorial": 2.0, "epoch_vs_flop_bound": 1.9})
    assert "epoch_speedup_vs_tutorial" in table and "yes" in table.splitlines()[1]
    assert "NO" in table.splitlines()[2]
    assert len(table.splitlines()) >= len(TARGETS) + 1


@pytest.mark.slow
def test_augmentation_probe_alternates_plain_and_augmented_epochs() -> None:
    # the bench's augmentation cost comes from this probe: both models' epochs in one process
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mnist_sweep.bench._epoch_probe", "augmentation", "--epochs", "3"],
                         capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(figures["epoch_seconds"]) == len(figures["augmented_epoch_seconds"]) == 3
    plain, augmented = figures["epoch_seconds"], figures["augmented_epoch_seconds"]
    assert figures["pair_ratios"] == [augmented[1] / plain[1], augmented[2] / plain[2]]
    assert figures["epoch_s"] == min(figures["epoch_seconds"][1:])
    assert figures["augmented_epoch_s"] == min(figures["augmented_epoch_seconds"][1:])
    assert 0 < figures["epoch_s"] < 60 and 0 < figures["augmented_epoch_s"] < 60


def _nothing_left(cwd: Path, tmp: Path) -> None:
    assert sorted(p.name for p in cwd.iterdir()) == []  # no studies/no-name-*/, studies/parallel/ ...
    assert sorted(p.name for p in tmp.iterdir()) == []  # and the scratch folders are gone


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """An empty working directory and an empty temporary-files folder for the bench to run in."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return cwd, tmp


def test_the_pruning_part_keeps_its_models_in_a_scratch_folder_it_removes(elsewhere, monkeypatch) -> None:
    cwd, tmp = elsewhere
    used: list[Path] = []
    real = suite.keep_models_in

    def keep_models_in(study, folder) -> None:
        assert Path(folder).resolve().is_relative_to(tmp.resolve())
        used.append(Path(folder))
        real(study, folder)

    monkeypatch.setattr(suite, "keep_models_in", keep_models_in)
    # one 1-epoch trial per arm: each is COMPLETE, so each keeps a model (before: studies/no-name-*/ here)
    out = suite.bench_pruning(fast=True, seeds=(0,), max_trials=1, epochs=1)
    assert out["threshold"] == 0.955 and len(used) == 2
    _nothing_left(cwd, tmp)


@pytest.mark.slow
def test_the_parallel_part_runs_its_sweeps_in_a_scratch_folder_it_removes(elsewhere) -> None:
    cwd, tmp = elsewhere
    out = bench_parallel(n_trials=2)  # two `run` processes (1 and 2 workers); before: studies/parallel/ here
    assert out["trials_per_hour_1_worker"] > 0 and out["trials_per_hour_2_workers"] > 0
    _nothing_left(cwd, tmp)


def test_pair_ratios_leave_out_the_compiling_pair() -> None:
    from mnist_sweep.bench._epoch_probe import pair_ratios

    seconds = {"epoch_seconds": [9.0, 1.0, 2.0], "augmented_epoch_seconds": [12.0, 1.1, 2.4]}
    assert pair_ratios(seconds) == pytest.approx([1.1, 1.2])
