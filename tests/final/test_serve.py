"""``serve``: the model's web page in a real headless Chromium, and the HTTP API's answers."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, tiny_dataset) -> Path:
    from mnist_sweep.model.factory import build_model
    from mnist_sweep.model.training import fit, fresh_keras

    fresh_keras(0)
    model = build_model({"hidden_layers": 1, "units": 64, "epochs": 3, "optimizer": "adam", "dropout": 0.0})
    ds = tiny_dataset
    fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=64, epochs=3)
    path = tmp_path_factory.mktemp("serve") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def server(model_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mnist_sweep", "serve", str(model_path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(base + "/info", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read()[-2000:]}") from None
            time.sleep(0.25)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def _post(url: str, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_api_classifies_and_answers_errors_as_json(server: str, tiny_dataset) -> None:
    right = 0
    for image, label in zip(tiny_dataset.x_test[:20], tiny_dataset.y_test[:20], strict=True):
        status, body = _post(server + "/predict", _png((image.reshape(28, 28) * 255).astype(np.uint8)))
        assert status == 200 and len(body["probabilities"]) == 10 and body["label"] == str(body["digit"])
        right += body["digit"] == label
    assert right >= 14  # a 3-epoch model on 2,000 images
    boundary = "xyz"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"d.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + _png(np.zeros((28, 28), np.uint8) + 0) + \
        f"\r\n--{boundary}--\r\n".encode()
    status, body = _post(server + "/predict", form, f"multipart/form-data; boundary={boundary}")
    assert status == 400 and "blank" in body["error"]  # parsed the field: an all-black image has no ink
    assert _post(server + "/predict", b"plain text")[0] == 400
    status, body = _post(server + "/predict", b"\0" * (11 * 1024 * 1024))
    assert status == 413 and "over the limit" in body["error"]
    assert _post(server + "/nothing", b"x")[0] == 404
    with urllib.request.urlopen(server + "/", timeout=5) as response:  # still answering
        assert response.status == 200 and b"<canvas" in response.read()


def test_drawing_on_the_page_shows_a_prediction(server: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium for the browser test (.ci/run installs it)")
        pytest.skip("chromium is not installed (CI installs it; apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server + "/")
        page.wait_for_selector(".bar")  # the class names arrived
        box = page.locator("#pad").bounding_box()
        page.mouse.move(box["x"] + 140, box["y"] + 40)  # a vertical stroke: a 1
        page.mouse.down()
        for step in range(1, 21):
            page.mouse.move(box["x"] + 140, box["y"] + 40 + step * 10)
        page.mouse.up()
        page.wait_for_function("document.getElementById('prediction').textContent.length > 0", timeout=20000)
        shown = page.locator("#prediction").text_content()
        assert shown == "1", f"a drawn 1 read as {shown}"
        assert page.locator(".bar").count() == 10 and page.locator(".bar.top").count() == 1
        assert "% sure" in page.locator("#confidence").text_content()
        page.screenshot(path=str(tmp_path / "serve.png"))
        browser.close()


def test_stalled_uploads_hold_no_thread_and_a_normal_request_is_answered(server: str, model_path: Path) -> None:
    port = int(server.rsplit(":", 1)[1])
    pid = int(subprocess.run(["pgrep", "-f", f"serve {model_path} --port {port}"], capture_output=True,
                             text=True).stdout.split()[0])
    stalled = []
    try:
        for _ in range(150):  # each announces 9 MB, sends 1,000 bytes and stops
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                               b"Content-Length: 9000000\r\n\r\n" + b"\0" * 1000)
            stalled.append(connection)
        started = time.monotonic()
        status, body = _post(server + "/predict", _png(np.pad(np.full((12, 4), 255, np.uint8), 8)))
        assert status == 200 and len(body["probabilities"]) == 10
        assert time.monotonic() - started < 5
        assert len(os.listdir(f"/proc/{pid}/task")) < 60  # threads: not one per connection
    finally:
        for connection in stalled:
            connection.close()
    with urllib.request.urlopen(server + "/info", timeout=5) as response:
        assert response.status == 200
