"""Winner confirmation: the best configs re-run with other seeds, ranked on their mean."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from helpers import TINY_SWEEP

import mnist_sweep as ms
from mnist_sweep.cli.main import main
from mnist_sweep.search.confirmation import CONFIRMS_ATTR, config_groups
from mnist_sweep.search.kept_models import kept_models
from mnist_sweep.search.loop import run_sweep

SWEEP = {**TINY_SWEEP, "name": "conf", "trials": 3, "confirm": {"top": 2, "seeds": 2}, "keep": {"models": 3},
         "space": {**TINY_SWEEP["space"], "hidden_layers": 1, "units": [16, 32, 64]}}


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory, tiny_dataset) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('conf') / 'c.db'}"
    return run_sweep(ms.sweep_from_dict(SWEEP), url, dataset=tiny_dataset), url


def test_the_top_configs_rerun_with_other_seeds_beyond_the_trials(confirmed) -> None:
    study, _ = confirmed
    search = [t for t in study.trials if CONFIRMS_ATTR not in t.user_attrs]
    reruns = [t for t in study.trials if CONFIRMS_ATTR in t.user_attrs]
    assert len(search) == 3 and len(reruns) == 4  # 2 configs x 2 seeds, on top of the 3 trials
    top = sorted((t for t in search if t.state.name == "COMPLETE"), key=lambda t: (-t.value, t.number))[:2]
    assert sorted({t.user_attrs[CONFIRMS_ATTR] for t in reruns}) == sorted(t.number for t in top)
    for rerun in reruns:
        original = study.trials[rerun.user_attrs[CONFIRMS_ATTR]]
        assert rerun.params == original.params and rerun.state.name == "COMPLETE"
    # other seeds: the same config lands on other weights (its values differ, at least somewhere)
    assert len({round(t.value, 6) for t in study.trials if t.state.name == "COMPLETE"}) > 2


def test_configs_rank_on_their_mean_and_export_and_final_follow(confirmed, tmp_path: Path, capsys) -> None:
    study, url = confirmed
    groups = config_groups(study.trials)
    confirmed_groups = [g for g in groups if g.runs == 3]
    assert len(confirmed_groups) == 2 and groups[:2] == confirmed_groups  # confirmed ones first ...
    assert groups[0].mean >= groups[1].mean  # ... by their mean
    assert main(["export", "--study", "conf", "--storage", url, "-o", str(tmp_path / "best.yaml")]) == 0
    assert f"trial {groups[0].trial} " in capsys.readouterr().out
    assert main(["final", "--study", "conf", "--storage", url, "-o", str(tmp_path / "final"), "-k", "1"]) == 0
    metrics = json.loads((tmp_path / "final" / "metrics.json").read_text())
    best_kept_of_winner = [k.trial for k in kept_models(study) if k.trial in groups[0].numbers]
    assert metrics["members"] == best_kept_of_winner[:1]  # the winning config's best kept run
    assert main(["report", "--study", "conf", "--storage", url, "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Winner confirmation" in page and "mean of its 3 runs" in page


def test_resuming_a_confirmed_study_runs_nothing_more(confirmed, tiny_dataset) -> None:
    study, url = confirmed
    before = len(study.trials)
    again = run_sweep(ms.sweep_from_dict(SWEEP), url, dataset=tiny_dataset)
    assert len(again.trials) == before


def test_hard_timeout_stops_the_running_trial_and_starts_no_other(tmp_path: Path, tiny_dataset) -> None:
    import time

    space = {**TINY_SWEEP["space"], "hidden_layers": 1, "units": 16, "epochs": 2000}
    sweep = ms.sweep_from_dict({**TINY_SWEEP, "name": "hard", "trials": 5, "space": space, "timeout": 1,
                                "hard_timeout": 3})
    started = time.monotonic()
    study = run_sweep(sweep, f"sqlite:///{tmp_path / 'h.db'}", dataset=tiny_dataset)
    assert time.monotonic() - started < 20  # 2,000 epochs would take minutes
    (trial,) = study.trials
    assert trial.state.name == "PRUNED" and "hard_timeout" in trial.user_attrs["fail_reason"]
    assert 1 <= trial.user_attrs["epochs_run"] < 2000
    with pytest.raises(ms.InputError, match="hard_timeout: 1 is below timeout 5"):
        ms.sweep_from_dict({**TINY_SWEEP, "timeout": 5, "hard_timeout": 1})
    assert ms.with_overrides(ms.load_sweep("default"), timeout=60).hard_timeout == 300  # the same grace
