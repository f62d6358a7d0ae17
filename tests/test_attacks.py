"""The attack pass: hostile study names, half-written outputs, YAML bombs, decompression bombs, huge
images and DNS rebinding. Each test fails on the code before its fix (see the report of the pass)."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from helpers import TINY_SWEEP, free_port

from mnist_sweep.cli.main import main
from mnist_sweep.errors import InputError

REPO = Path(__file__).resolve().parents[1]
WEIRD_NAMES = ["../..", "..", ".", "", "/tmp/elsewhere", "a/../../b", "col/x", "col x", "col-x", "x" * 300,
               "evil\ntrials: 999", "tab\tname", "~", "study"]


def _one_error_line(capsys: pytest.CaptureFixture[str], *mentions: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in mentions:
        assert text in lines[0], lines[0]
    return lines[0]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory: pytest.TempPathFactory, tiny_dataset) -> str:
    """One real tiny study ("tiny", 1 trial) in a fresh SQLite; tests copy it under other names."""
    from mnist_sweep.search.loop import run_sweep
    from mnist_sweep.sweep.config import parse_sweep

    url = f"sqlite:///{tmp_path_factory.mktemp('attacks') / 'studies.db'}"
    run_sweep(parse_sweep({**TINY_SWEEP, "trials": 1}, "tiny.yaml"), url, dataset=tiny_dataset, heartbeat=False)
    return url


def _copy(url: str, name: str) -> optuna.Study:
    optuna.copy_study(from_study_name="tiny", from_storage=url, to_storage=url, to_study_name=name)
    return optuna.load_study(study_name=name, storage=url)


# --- 1. study names as paths -----------------------------------------------------------------------


def test_every_study_path_is_one_distinct_folder_inside_studies() -> None:
    from mnist_sweep._base.paths import STUDIES_DIR, export_path, metrics_path, model_path, report_path, study_dir

    folders = {}
    for name in WEIRD_NAMES:
        folder = study_dir(name)
        assert folder.parent == STUDIES_DIR and folder.name not in ("", ".", ".."), (name, folder)
        assert len(folder.name) <= 100 and "/" not in folder.name and "\n" not in folder.name
        for path in (report_path(name), model_path(name), metrics_path(name), export_path(name)):
            assert path.parent == folder
        folders.setdefault(folder, []).append(name)
    assert all(len(names) == 1 for names in folders.values()), {f: n for f, n in folders.items() if len(n) > 1}
    assert study_dir("quick") == Path("studies/quick")  # a plain name is its own folder


def test_report_and_export_of_path_like_names_stay_inside_studies(tiny_url: str, tmp_path: Path, capsys) -> None:
    names = [str(tmp_path / "outside"), "../../escape", "x" * 300]  # 300: "File name too long" before
    for name in names:
        _copy(tiny_url, name)
        before = _files(tmp_path)
        assert main(["report", "--storage", tiny_url, "--study", name]) == 0
        assert main(["export", "--storage", tiny_url, "--study", name]) == 0
        capsys.readouterr()
        new = _files(tmp_path) - before
        assert {p.name for p in new} == {"report.html", "best.yaml"}, new
        assert all(p.parent.parent == tmp_path / "studies" and len(p.parent.name) <= 100 for p in new), new
    assert not (tmp_path / "outside").exists() and not (tmp_path.parent / "escape").exists()


def test_exported_yaml_keeps_a_newline_in_the_study_name_on_one_line(tiny_url: str, tmp_path: Path) -> None:
    from mnist_sweep.results.export import export_best
    from mnist_sweep.sweep.loader import load_sweep

    name = "evil\ntrials: 999\nseed: 7\u2028space: {}\x85pruner: median"
    path = export_best(_copy(tiny_url, name))
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert len(header) == 3 and lines[:3] == header, lines[:5]
    assert sum(line.startswith(("trials:", "seed:", "space:", "pruner:")) for line in lines) == 4  # its own, once
    assert "\u2028" not in text and "\x85" not in text
    data = yaml.safe_load(text)
    assert data["source"]["study"] == name and data["trials"] == 1
    assert load_sweep(path).trials == 1


# --- 2. queued (WAITING) trials ----------------------------------------------------------------------


def test_waiting_trials_have_an_empty_start_in_report_figures_and_csv(tiny_url: str, tmp_path: Path,
                                                                       capsys) -> None:
    from mnist_sweep.results.figures import TITLES, report_figures
    from mnist_sweep.results.report import write_report

    study = _copy(tiny_url, "queued")
    study.enqueue_trial(dict(study.trials[0].params))
    assert len(report_figures(study)) == len(TITLES)
    text = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    head = text[text.index('<table id="trials-table"'):]
    head = head[: head.index("</thead>")]
    column = head[: head.index(">started<")].count("<th title")  # the "started" column
    row = text[text.index('<tr class="state-WAITING">'):]
    cells = row[: row.index("</tr>")].split("<td")[1:]
    assert cells[column].startswith(' data-sort=""></td>') and "NaT" not in text
    assert main(["trials", "--storage", tiny_url, "--study", "queued"]) == 0
    import pandas as pd

    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    waiting = frame[frame["state"] == "WAITING"]
    assert len(waiting) == 1 and waiting["datetime_start"].isna().all()


# --- 3. atomic outputs ---------------------------------------------------------------------------------


def test_an_interrupted_report_leaves_the_previous_file_whole(tiny_url: str, tmp_path: Path, monkeypatch) -> None:
    import mnist_sweep.results.report as report

    study = optuna.load_study(study_name="tiny", storage=tiny_url)
    path = report.write_report(study, tmp_path / "out" / "report.html")
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # half-way through writing the new file
    with pytest.raises(KeyboardInterrupt):
        report.write_report(study, path)
    assert path.read_bytes() == before and {p.name for p in path.parent.iterdir()} == {"report.html"}


def test_the_trials_csv_is_written_atomically(tiny_url: str, tmp_path: Path, monkeypatch) -> None:
    from mnist_sweep.results.tables import trials_frame, write_trials_csv

    frame = trials_frame(optuna.load_study(study_name="tiny", storage=tiny_url))
    path = write_trials_csv(frame, tmp_path / "trials.csv")
    before = path.read_bytes()
    assert before == frame.to_csv(index=False).encode()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_trials_csv(frame.head(0), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_an_interrupted_train_leaves_no_old_metrics_or_curves_beside_a_model(tiny_url: str, tmp_path: Path,
                                                                             monkeypatch) -> None:
    import keras

    from mnist_sweep.final.retrain import train_final
    from mnist_sweep.results.export import best_config

    config = best_config(optuna.load_study(study_name="tiny", storage=tiny_url))
    out = tmp_path / "out"
    first = train_final(config, output_dir=out, epochs=1)
    assert {p.name for p in out.iterdir()} == {"model.keras", "metrics.json", "curves.html", "MODEL_CARD.md"}
    old_model = first.model_path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_final(config, output_dir=out, epochs=1)
    assert first.model_path.read_bytes() == old_model  # the old model whole, and nothing of its run beside it
    assert {p.name for p in out.iterdir()} == {"model.keras"}


# --- 4. sweep files within limits ------------------------------------------------------------------------

_LOLS = ",".join(['"lol"'] * 9)
_BILLION_LAUGHS = "".join(  # the classic, 9**9 "lol"s once expanded, given as a value to validate and show
    [f"a: &a [{_LOLS}]\n"] + [f"{x}: &{x} [{','.join([f'*{p}'] * 9)}]\n"
                              for p, x in zip("abcdefgh", "bcdefghi", strict=True)] + ["trials: *i\n"])


def test_a_50_mb_sweep_file_fails_fast_with_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# a comment line that goes on and on\n" * (50 * 2**20 // 37))
    start = time.perf_counter()
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert time.perf_counter() - start < 2
    _one_error_line(capsys, str(path), "limit")
    assert not (tmp_path / "s.db").exists()


def test_a_billion_laughs_alias_bomb_exits_2_quickly_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(_BILLION_LAUGHS)

    def limit_memory() -> None:  # 1 GiB of address space: an expanding bomb dies of MemoryError instead
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mnist_sweep", "run", str(path), "--storage",
                           f"sqlite:///{tmp_path / 's.db'}"], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_memory, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert time.perf_counter() - start < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "alias" in lines[0] and len(lines[0]) < 300, proc.stderr[-2000:]
    # refused where the count first passes the budget (line 6: 9**6 values), not after expanding line 10
    assert lines[0].startswith(f"error: {path}:6:"), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laughs.yaml"]  # no storage, no studies/


def test_error_lines_show_at_most_80_characters_of_a_huge_value() -> None:
    import mnist_sweep as ms

    bomb: list = ["lol"] * 9
    for _ in range(8):
        bomb = [bomb] * 9  # 9**9 strings, shared: cheap to build, not to print
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        ms.sweep_from_dict({"name": "x", "trials": 1, "space": {"units": {"choices": bomb}}, "zz" * 10**5: bomb})
    assert time.perf_counter() - start < 5
    assert all(len(line) < 300 for line in err.value.problems), [len(line) for line in err.value.problems]


def test_deep_nesting_and_unbuildable_scalars_are_one_line(tmp_path: Path, capsys) -> None:
    for name, text in (("deep", "trials: " + "[" * 500 + "]" * 500), ("date", "trials: 1\nseed: 2020-13-45\n"),
                       ("digits", "trials: " + "9" * 5000 + "\n"), ("recursive", "trials: &a [*a]\n")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2, name
        _one_error_line(capsys, str(path))
    assert not (tmp_path / "s.db").exists()


# --- 5. decompression and declared sizes ----------------------------------------------------------------


def _gzip_bomb(header: bytes, zeros: int) -> bytes:
    """A gzip stream of ``header`` then ``zeros`` zero bytes, compressed on the fly (about 1000:1)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(header)
        chunk = bytes(1 << 24)
        for _ in range(zeros // len(chunk)):
            gz.write(chunk)
    return out.getvalue()


def test_a_gzip_bomb_idx_is_refused_without_inflating(tmp_path: Path) -> None:
    from mnist_sweep.data.dataset import read_idx

    declared = bytes([0, 0, 8, 3]) + b"".join(struct.pack(">I", d) for d in (60000, 28, 28))  # MNIST's shape
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_bomb(declared, 2**29))  # 512 MiB of zeros in about 0.5 MB
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"longer than the 47040000 bytes its header says"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"  # the declared 47 MB (+1), not 512 MiB


@pytest.mark.parametrize(("dims", "message"), [((2**31, 2**16, 2**16), "over the limit of 1000000000 bytes"),
                                               ((60000, 28, 28), "more than a .*-byte gzip file can hold")])
def test_an_idx_header_declaring_too_much_is_refused_before_reading(tmp_path: Path, dims: tuple, message: str) -> None:
    from mnist_sweep.data.dataset import read_idx

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(100)))
    with pytest.raises(InputError, match=message) as err:
        read_idx(path)
    assert err.value.problems[0].startswith(str(path))


def _npy_header(shape: tuple, dtype: str = "|u1") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def _real(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_an_npz_declaring_a_huge_array_is_one_line_naming_the_member(tmp_path: Path, capsys) -> None:
    small = {"x_train": _real(np.zeros((4, 28, 28), np.uint8)), "y_train": _real(np.arange(4) % 2),
             "x_test": _real(np.zeros((2, 28, 28), np.uint8)), "y_test": _real(np.arange(2) % 2)}
    huge = _npz(tmp_path / "huge.npz", {**small, "x_test": _npy_header((1024, 1024, 1024, 1536))})  # 1.5 TiB
    assert main(["run", "quick", "--data", str(huge), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    _one_error_line(capsys, str(huge), "x_test", "over the limit")
    short = _npz(tmp_path / "short.npz", {**small, "y_test": _npy_header((10**6,), "<i8")})
    npy = tmp_path / "renamed.npz"
    npy.write_bytes(small["x_train"])  # a .npy, not a zip
    for path, why in ((short, "y_test"), (npy, "not a readable .npz")):
        assert main(["run", "quick", "--data", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
        _one_error_line(capsys, str(path), why)
    assert not (tmp_path / "s.db").exists()


# --- 6. huge images ----------------------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none: decoding it would
    take width * height * 4 bytes, reading its header takes 100."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnist_sweep.model.factory import build_model

    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_model({"hidden_layers": 0}).save(path)
    return path


def test_predict_refuses_a_huge_image_before_decoding(saved_model: Path, tmp_path: Path, capsys) -> None:
    import mnist_sweep as ms

    huge, big = tmp_path / "huge.png", tmp_path / "big.png"
    huge.write_bytes(_png_header(13000, 13000))  # over Pillow's own warning threshold too
    big.write_bytes(_png_header(7000, 7000))  # 49 megapixels: under Pillow's, over ours
    model = ms.load_model(saved_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes
        results = ms.predict_files(model, [huge, big])
    assert "over the limit of 40 megapixels" in results[0]["error"]
    assert results[1]["error"] == "image of 7000 x 7000 pixels, over the limit of 40 megapixels"
    assert main(["predict", str(saved_model), str(big)]) == 2
    _one_error_line(capsys, str(big), "7000 x 7000", "40 megapixels")


def test_an_image_folder_with_a_huge_image_names_it(tmp_path: Path) -> None:
    from PIL import Image

    from mnist_sweep.data.dataset import load_arrays

    for label in ("a", "b"):
        (tmp_path / "digits" / label).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp_path / "digits" / label / "ok.png")
    (tmp_path / "digits" / "b" / "zz.png").write_bytes(_png_header(7000, 7000))
    with pytest.raises(InputError) as err:
        load_arrays(str(tmp_path / "digits"))
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(str(tmp_path / "digits" / "b" / "zz.png"))
    assert "40 megapixels" in err.value.problems[0]



def _request(port: int, method: str, path: str, host: str | None = None,
             body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        if body is not None:
            conn.putheader("Content-Type", "image/png")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _start(argv: list[str], port: int, ready_path: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mnist_sweep", *argv, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1][-2000:])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the server did not answer within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def test_serve_answers_413_for_a_huge_image_and_403_for_a_foreign_host(saved_model: Path) -> None:
    port = free_port()
    proc = _start(["serve", str(saved_model)], port, "/info")
    try:
        status, body = _request(port, "POST", "/predict", body=_png_header(13000, 13000))
        assert status == 413 and "40 megapixels" in json.loads(body)["error"]
        assert _request(port, "GET", "/info")[0] == 200  # still serving
        assert _request(port, "GET", "/info", host="rebind.attacker.example")[0] == 403
        assert _request(port, "GET", "/info", host=f"localhost:{port}")[0] == 200
    finally:
        _stop(proc)


# --- 7. the dashboard and DNS rebinding ----------------------------------------------------------------------


def test_the_dashboard_refuses_a_foreign_host_header(tiny_url: str) -> None:
    port = free_port()
    proc = _start(["dashboard", "--storage", tiny_url], port, "/api/studies")
    try:
        for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", "127.0.0.1:1", ""):
            status, _ = _request(port, "GET", "/api/studies", host=host)
            assert 400 <= status < 500, (host, status)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
            status, body = _request(port, "GET", "/api/studies", host=host)
            assert status == 200 and "study_summaries" in json.loads(body), host
    finally:
        _stop(proc)


def test_allowed_hosts_name_the_served_address_only() -> None:
    from mnist_sweep._base.hosts import allowed_hosts

    assert allowed_hosts("127.0.0.1", 8080) == {"127.0.0.1:8080", "localhost:8080", "[::1]:8080"}
    assert allowed_hosts("::1", 80) == {"127.0.0.1:80", "localhost:80", "[::1]:80", "127.0.0.1", "localhost", "[::1]"}
    assert "myhost.example:9000" in allowed_hosts("MyHost.example", 9000)
    assert socket.gethostname().lower() + ":8080" in allowed_hosts("0.0.0.0", 8080)


# --- 8. numbers out of range, and a run that finishes nothing -------------------------------------------------


@pytest.mark.parametrize(("changes", "key"), [
    ({"seed": -1}, "seed"), ({"seed": 2**40}, "seed"), ({"data": {"seed": -1}}, "data.seed"),
    ({"heartbeat": {"interval": 10**12}}, "heartbeat.interval"), ({"storage_retry": {"seconds": -1}}, "storage_retry"),
    ({"trial_timeout": 0}, "trial_timeout"),
])
def test_out_of_range_numbers_are_one_line_exit_2(write_sweep, sqlite_url: str, changes: dict, key: str,
                                                   capsys) -> None:
    code = main(["run", str(write_sweep(**changes)), "--storage", sqlite_url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and key in err and "Traceback" not in err, err
    assert main(["run", str(write_sweep()), "--seed", "-1", "--storage", sqlite_url]) == 2
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_a_run_that_finishes_no_trial_exits_1_with_the_reason(write_sweep, sqlite_url: str, capsys) -> None:
    path = write_sweep(trials=1, timeout=0.05, trial_timeout=0.001)  # its one trial fails, then the timeout ends it
    code = main(["run", str(path), "--storage", sqlite_url])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no trial finished" in err and "trial_timeout" in err, err
