"""The HTML report, the trials export and the dashboard, on one real tiny study built once per module."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers import TINY_SWEEP, free_port
from optuna.trial import TrialState

from mnist_sweep._base.hosts import is_loopback
from mnist_sweep.cli.main import main
from mnist_sweep.errors import InputError
from mnist_sweep.results.dashboard import serve_dashboard
from mnist_sweep.results.figures import searched_axes
from mnist_sweep.results.report import FIGURE_SECTIONS, SECTIONS, write_report
from mnist_sweep.results.tables import trials_frame
from mnist_sweep.search.loop import run_sweep
from mnist_sweep.search.study import load_study
from mnist_sweep.sweep.config import parse_sweep

PRUNED_CURVE = {1: 0.31, 2: 0.42}


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory, tiny_dataset) -> str:
    """4 real trials, plus one PRUNED trial with a learning curve and one FAILed trial, in a fresh SQLite."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'studies.db'}"
    sweep = parse_sweep({**TINY_SWEEP, "trials": 4, "enqueue": [{"optimizer": "sgd", "learning_rate": 0.05}]},
                        "tiny.yaml")
    study = run_sweep(sweep, url, dataset=tiny_dataset, heartbeat=False)
    first = study.trials[0]
    history = {"loss": [2.0, 1.9], "accuracy": [0.3, 0.4], "val_loss": [2.1, 1.8], "val_accuracy": [0.31, 0.42]}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, params={**first.params, "epochs": 2}, distributions=first.distributions,
        intermediate_values=PRUNED_CURVE, user_attrs={"history": history, "n_params": 7850, "epochs_run": 2,
                                                      "seconds_per_epoch": 0.5}))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, params=first.params, distributions=first.distributions,
        user_attrs={"fail_reason": "RuntimeError: boom"}))
    return url


@pytest.fixture(scope="module")
def report(study_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The report, written through the CLI with the default study (the storage's only one)."""
    path = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", "--storage", study_url, "-o", str(path)]) == 0
    return path, path.read_text(encoding="utf-8")


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.script_srcs: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "script" and a.get("src"):
            self.script_srcs.append(a["src"])
        if tag == "tr" and (a.get("class") or "").startswith("state-"):
            self.rows += 1


def test_report_holds_every_figure_and_embeds_plotly(report: tuple[Path, str]) -> None:
    path, text = report
    parser = _Ids()
    parser.feed(text)
    parser.close()
    assert set(SECTIONS) <= parser.ids
    drawn = [s for s in FIGURE_SECTIONS if s != "confirm"]  # the sweep confirms nothing: a note says so
    assert {f"plot-{s}" for s in drawn} <= parser.ids  # every other figure drawn, no fallback note
    assert "No config was re-run with other seeds" in text
    assert parser.script_srcs == [] and 'src="https://cdn.plot.ly' not in text  # offline: plotly.js is inline
    assert path.stat().st_size > 1_000_000 and text.count("Plotly.newPlot(") == len(drawn)
    assert parser.rows == 6 and "trials-table" in parser.ids


def test_report_header_states_counts_best_and_searched_axes(report: tuple[Path, str], study_url: str) -> None:
    text = report[1]
    study = load_study(study_url)
    assert "6 trials: 4 complete, 1 fail, 1 pruned." in text
    best = study.best_trial
    assert f"Best: trial {best.number}, validation accuracy <strong>{best.value:.4f}</strong>" in text
    assert "No retrained model yet" in text
    searched = searched_axes(study.trials)
    assert "batch_size" not in searched and {"optimizer", "learning_rate"} <= set(searched)
    assert f"Searched axes: {', '.join(searched)}." in text
    assert "pruned after epoch 2" in text and "RuntimeError: boom" in text


def test_report_shows_the_retrained_test_accuracy(study_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = load_study(study_url, "tiny")
    metrics = tmp_path / "studies" / "tiny" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"test_accuracy": 0.98765, "test_loss": 0.05, "params": {"units": 32}}))
    path = write_report(study)
    assert path == Path("studies/tiny/report.html") and path.is_file()
    assert "test accuracy <strong>0.9877</strong> (test_loss 0.05)" in path.read_text(encoding="utf-8")
    with pytest.raises(InputError, match="no such metrics file"):
        write_report(study, tmp_path / "r.html", metrics=tmp_path / "missing.json")


def test_empty_or_only_failed_study_is_input_error(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    empty = optuna.create_study(study_name="empty", storage=url)
    with pytest.raises(InputError, match="study 'empty' has no trials yet"):
        write_report(empty, tmp_path / "r.html")
    failed = optuna.create_study(study_name="failed", storage=url)
    failed.tell(failed.ask(), state=TrialState.FAIL)
    with pytest.raises(InputError, match=r"study 'failed' has no finished trial \(1 fail\)"):
        write_report(failed, tmp_path / "r.html")
    assert main(["report", "--storage", url, "--study", "failed", "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study 'failed' has no finished trial") and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_thin_studies_get_notes_instead_of_figures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'thin.db'}"
    dists = {"dropout": optuna.distributions.FloatDistribution(0, 0.5),
             "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"])}
    pruned_only = optuna.create_study(study_name="pruned", storage=url, direction="maximize")
    for value, params in ((0.5, {"dropout": 0.1, "optimizer": "sgd"}), (0.6, {"dropout": 0.3, "optimizer": "adam"})):
        pruned_only.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                                        intermediate_values={1: value}))
    text = write_report(pruned_only, tmp_path / "pruned.html").read_text(encoding="utf-8")
    assert "No COMPLETE trial yet" in text and 'id="plot-axes"' in text and 'id="plot-history"' in text
    assert "Importances need at least 2 COMPLETE trials" in text and 'id="plot-parallel"' not in text
    single = optuna.create_study(study_name="single", storage=url, direction="maximize")
    diverged = {"loss": [float("nan")], "accuracy": [0.1], "val_loss": [float("inf")], "val_accuracy": [0.1]}
    single.add_trial(optuna.trial.create_trial(value=0.1, params={"dropout": 0.1, "optimizer": "sgd"},
                                               distributions=dists, user_attrs={"history": diverged}))
    text = write_report(single, tmp_path / "single.html").read_text(encoding="utf-8")
    assert "No axis varies across the trials" in text and 'id="plot-curves"' in text


def test_trials_frame_has_one_row_per_trial(study_url: str) -> None:
    study = load_study(study_url)
    frame = trials_frame(study)
    assert list(frame["number"]) == [t.number for t in study.trials]
    assert {"params_optimizer", "params_learning_rate", "duration_s", "n_params", "seconds_per_epoch",
            "epochs_run", "fail_reason", "val_accuracy_e1", "val_accuracy_e2", "history"} <= set(frame.columns)
    pruned = frame[frame["state"] == "PRUNED"].iloc[0]
    assert pruned["best_val_accuracy"] == max(PRUNED_CURVE.values()) and pruned["val_accuracy_e2"] == 0.42
    complete = frame[frame["state"] == "COMPLETE"]
    assert (complete["value"] == complete["best_val_accuracy"]).all() and complete["n_params"].min() > 7000
    assert json.loads(complete["history"].iloc[0])["val_accuracy"][0] == complete["val_accuracy_e1"].iloc[0]


def test_trials_command_writes_csv(study_url: str, tmp_path: Path, capsys) -> None:
    assert main(["trials", "--storage", study_url]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(frame) == 6 and {"number", "state", "params_units", "params_dropout"} <= set(frame.columns)
    out = tmp_path / "trials.csv"
    assert main(["trials", "--study", "tiny", "--storage", study_url, "-o", str(out)]) == 0
    assert pd.read_csv(out).equals(frame)


def test_missing_study_or_storage_exits_2_and_lists_studies(study_url: str, tmp_path: Path, capsys) -> None:
    assert main(["report", "--storage", study_url, "--study", "nope"]) == 2
    assert "error: no study 'nope' in " in capsys.readouterr().err
    missing = tmp_path / "missing.db"
    assert main(["trials", "--storage", f"sqlite:///{missing}"]) == 2
    assert "no such storage file" in capsys.readouterr().err and not missing.exists()
    two = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=two)
    assert main(["trials", "--storage", two]) == 2
    assert "holds 2 studies, pick one with --study: a, b" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Dashboard



def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_dashboard_serves_the_study_and_stops_on_ctrl_c(study_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_sweep", "dashboard", "--storage", study_url,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                studies = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "the dashboard did not answer within 60 s"
        (tiny,) = [s for s in studies if s["study_name"] == "tiny"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{tiny['study_id']}")
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(detail["trials"]) == 6 and len(complete) == 4
        assert all(t["intermediate_values"] for t in complete)  # per-epoch val accuracy: learning curves
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert f"http://127.0.0.1:{port}/" in out
    assert "Traceback" not in err and err.strip() == "interrupted"


def test_dashboard_port_in_use_is_input_error(study_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InputError, match=r"cannot listen on 127\.0\.0\.1:\d+: port already in use"):
            serve_dashboard(study_url, port=busy.getsockname()[1])


def test_only_loopback_hosts_count_as_safe() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


# ---------------------------------------------------------------------------------------------
# Browser


def test_report_renders_in_headless_chromium(report: tuple[Path, str], tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium for the browser test (.ci/run installs it)")
        pytest.skip("chromium is not installed (CI installs it; apt-get install chromium)")
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", report[0].as_uri()],
        capture_output=True, text=True, timeout=180)
    dom, console = result.stdout, [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert result.returncode == 0, result.stderr[-2000:]
    drawn = [s for s in FIGURE_SECTIONS if s != "confirm"]  # the sweep confirms nothing: a note, no plot
    assert dom.count('class="plot-container plotly"') == len(drawn)
    assert dom.count('class="main-svg"') >= len(drawn)
    assert 'id="js-errors"' not in dom, dom[dom.find('id="js-errors"'):][:500]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
