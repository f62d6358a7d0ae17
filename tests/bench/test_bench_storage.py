"""The storage bench (mnist_sweep.bench.storage) and the proxy launcher, run small on a real,
temporary PostgreSQL database on the tests' own cluster (tests/servers.py)."""

from __future__ import annotations

from collections import Counter

import optuna
import psycopg
import pytest
from optuna.trial import TrialState

from mnist_sweep.bench.storage import EPOCHS, bench_storage, format_table, run_arm, temp_database
from mnist_sweep.storage import proxy as storage_proxy


@pytest.fixture(scope="module")
def pg_url(postgres_server):
    with temp_database(postgres_server.server) as url:
        yield url


def _check_row(row, url: str, workers: int, trials_per_worker: int) -> None:
    assert row.workers == workers and row.trials == workers * trials_per_worker
    assert 0 < row.storage_p50_s <= row.storage_p99_s
    assert row.trials_per_s > 0 and row.seconds > 0
    assert row.calls_per_trial >= 12 + EPOCHS + 7  # suggestions, reports, user attributes at least
    assert row.trial_p50_s >= EPOCHS * 0.02  # the "training" sleeps
    assert 0 <= row.storage_cpu_mean_s and 0 < row.cpu_busy <= 1
    study = optuna.load_study(study_name=row.study, storage=url)
    trials = study.get_trials()
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: workers * trials_per_worker}
    assert sorted(t.number for t in trials) == list(range(workers * trials_per_worker))
    for trial in trials:
        assert len(trial.params) == 12 and len(trial.intermediate_values) == EPOCHS
        assert [len(v) for v in trial.user_attrs["history"].values()] == [EPOCHS] * 4
        assert {"worker", "n_params", "seconds_per_epoch", "epochs_run"} <= set(trial.user_attrs)


def test_bench_measures_one_and_two_workers(pg_url: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = bench_storage(pg_url, workers=(1, 2), trials_per_worker=3)
    assert list(tmp_path.iterdir()) == []  # the workers ran in a scratch folder of their own
    assert [(r.label, r.workers) for r in result.scaling] == [("direct", 1), ("direct", 2)] and result.proxy == []
    for row in result.scaling:
        _check_row(row, pg_url, row.workers, 3)
        assert 0 < row.rdb_p50_s <= row.rdb_p99_s  # the SQL under the cache, timed too
        assert row.rdb_p50_s <= row.storage_p50_s  # and inside the cache's calls
        assert row.heartbeat_s_per_trial > 0  # heartbeats on, as sweeps run (counted apart)
    table = format_table(result.scaling)
    assert "| direct | 1 | 3 |" in table and "| direct | 2 | 6 |" in table


def test_bench_compares_direct_and_proxy(pg_url: str) -> None:
    result = bench_storage(pg_url, workers=(), trials_per_worker=3, proxy=True, proxy_workers=2)
    assert result.scaling == []
    assert [r.label for r in result.proxy] == ["direct", "direct no heartbeat", "grpc proxy"]
    for row in result.proxy:
        _check_row(row, pg_url, 2, 3)
    direct, quiet, proxied = result.proxy
    assert direct.heartbeat_s_per_trial > 0 and quiet.heartbeat_s_per_trial == 0
    assert proxied.heartbeat_s_per_trial == 0 and proxied.rdb_p50_s is None  # the SQL runs in the proxy


def test_fewer_reports_mean_fewer_calls(pg_url: str) -> None:
    every, fifth = run_arm(pg_url, 1, 2), run_arm(pg_url, 1, 2, report_every=5)
    assert every.calls_per_trial - fifth.calls_per_trial == 8 + 8  # 8 reports and 8 should_prune reads fewer
    trial = optuna.load_study(study_name=fifth.study, storage=pg_url).trials[0]
    assert sorted(trial.intermediate_values) == [5, 10]


def test_temp_database_is_dropped_on_error(postgres_server) -> None:
    with pytest.raises(RuntimeError, match="boom"), temp_database(postgres_server.server) as url:
        name = url.rsplit("/", 1)[1]
        raise RuntimeError("boom")
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres") as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_proxy_serves_the_cached_claiming_storage_and_warns_off_loopback(monkeypatch, tmp_path) -> None:
    served = []
    monkeypatch.setattr(optuna.storages, "run_grpc_proxy_server",
                        lambda storage, host, port: served.append((storage, host, port)))
    url = f"sqlite:///{tmp_path / 'proxied.db'}"
    storage_proxy.serve_storage_proxy(url)
    with pytest.warns(UserWarning, match="no TLS and no authentication"):
        storage_proxy.serve_storage_proxy(url, host="0.0.0.0", port=13001)
    (first, host, port), (_, wide, wide_port) = served
    assert (host, port, wide, wide_port) == ("127.0.0.1", 13000, "0.0.0.0", 13001)
    assert type(first).__name__ == "_CachedStorage"  # Optuna's advice: the cache in front of the RDB
    assert first.get_heartbeat_interval() is None  # the proxy cannot relay heartbeats
    assert [storage_proxy.is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "db.example")] \
        == [True, True, True, False, False]
