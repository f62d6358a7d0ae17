"""``serve``: a small web app for a trained model: draw or upload an image, see its class.

``GET /`` is one page (no assets from the network: it works offline) with a canvas to draw on
(mouse and touch), the predicted class and every class's probability as bars, updated as one
draws, and an upload button. ``POST /predict`` takes an image as the request body (any type
Pillow reads) or as the multipart form field ``image`` and answers JSON like ``predict --json``
(``label``, ``index``, ``probability``, ``probabilities``, and ``digit`` for the ten digits);
``GET /info`` gives the model's class names, input size and preprocessing (an upload goes through
the one its training images went through, as ``predict`` does).

Errors are JSON too (``{"error": "..."}``): a body over ``max_bytes`` or an image over
:data:`MAX_SERVED_PIXELS` (refused before decoding) gets 413, one that is not an image 400, an
unknown path 404, a request whose ``Host:`` does not name this server 403 (no DNS rebinding); the
server keeps answering after each. Why the standard library's ``http.server`` handler and not a
framework: one page and two endpoints need no routing, templating or extra dependency. Its
connections are read by one asyncio loop, not a thread each (:mod:`mnist_sweep.final._bounded_http`:
a deadline on every read, at most 512 connections, four threads that answer requests that have
fully arrived), so slow or stalled uploads hold neither threads nor more than their bytes so far;
predictions take a lock (one Keras model, called from several threads).

Example:
    >>> serve_model("studies/default/final/model.keras", port=8000)   # until Ctrl-C
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from mnist_sweep._base.hosts import allowed_hosts, is_loopback
from mnist_sweep.data.images import ImageTooLarge, open_image
from mnist_sweep.errors import InputError
from mnist_sweep.final._bounded_http import BoundedHTTPServer
from mnist_sweep.final.predict import predict
from mnist_sweep.model.saving import class_names, input_side, load_model, preprocessing

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: The largest image ``serve`` decodes (width x height): a 12-megapixel phone photo passes; 48 MB decoded as RGB.
MAX_SERVED_PIXELS = 16_000_000
_DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body up to this is read and dropped, so the client sees the 413


class ModelApp:
    """The model behind the page: classifies one image's bytes at a time."""

    def __init__(self, model_path: str | Path) -> None:

        self.path = Path(model_path)
        self.model = load_model(self.path)
        self.class_names = class_names(self.model)
        self.side = input_side(self.model)
        self.preprocessing = preprocessing(self.model)  # predict() applies it to every image
        self.lock = threading.Lock()
        self.page = resources.files("mnist_sweep.final").joinpath("web/index.html").read_bytes()

    def info(self) -> dict[str, Any]:
        return {"model": self.path.name, "side": self.side, "class_names": list(self.class_names),
                "preprocessing": self.preprocessing}

    def classify(self, data: bytes) -> dict[str, Any]:
        """The prediction for one encoded image, as ``predict --json`` gives it.

        Raises:
            ImageTooLarge: over :data:`MAX_SERVED_PIXELS` (refused before decoding).
            InputError: the bytes are not an image Pillow can read, or it is blank.
        """

        picture = open_image(io.BytesIO(data), max_pixels=MAX_SERVED_PIXELS)  # ImageTooLarge before decoding
        with self.lock:
            return predict(self.model, [picture])[0].to_dict()


def make_model_server(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000,
                      max_bytes: int = MAX_UPLOAD_BYTES) -> BoundedHTTPServer:
    """The server of :func:`serve_model`, bound (port 0: a free one) but not serving yet: ``serve_forever()`` it.

    Raises:
        InputError: the model cannot be loaded, or the address cannot be bound.
    """

    app = ModelApp(model_path)
    handler = type("Handler", (_Handler,), {"app": app, "max_bytes": max_bytes, "hosts": frozenset()})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = BoundedHTTPServer((host.strip("[]"), port), handler, max_bytes=max_bytes, drain_limit=_DRAIN_LIMIT,
                                   family=family)
    except OSError as err:
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    handler.hosts = allowed_hosts(host, server.server_port)
    return server


def serve_model(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000,
                max_bytes: int = MAX_UPLOAD_BYTES, out: TextIO | None = None) -> None:
    """Serve the web app for the model at ``model_path`` on ``host:port`` until interrupted (Ctrl-C).

    Prints the URL to ``out`` (default stdout), and a warning to stderr for a host that is not loopback.

    Raises:
        InputError: the model cannot be loaded, or the address cannot be bound.
    """

    server = make_model_server(model_path, host, port, max_bytes)
    app = server.RequestHandlerClass.app
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines (no authentication)", file=sys.stderr)
    print(f"serving {app.path} ({len(app.class_names)} classes, {app.side} x {app.side}) on "
          f"http://{host}:{server.server_port}/ (Ctrl-C to stop)", file=out or sys.stdout, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    app: ModelApp
    max_bytes: int
    hosts: frozenset[str]  # the Host: headers answered (dashboard.allowed_hosts): no DNS rebinding
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: one line per request would drown the URL line

    def _host_ok(self) -> bool:
        if self.headers.get("Host", "").lower() in self.hosts:
            return True
        self._drain(self._length())
        self._json(HTTPStatus.FORBIDDEN, {"error": "the Host header does not name this server"}, close=True)
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.app.page, "text/html; charset=utf-8")
        elif path == "/info":
            self._json(HTTPStatus.OK, self.app.info())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        if self.path.split("?", 1)[0] != "/predict":
            self._drain(self._length())
            self._json(HTTPStatus.NOT_FOUND, {"error": "POST an image to /predict"})
            return
        length = self._length()
        if length is None:
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send the image with a Content-Length"}, close=True)
            return
        if length > self.max_bytes:
            drained = self._drain(length)
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       {"error": f"upload of {length} bytes is over the limit of {self.max_bytes}"}, close=not drained)
            return
        body = self.rfile.read(length)
        try:
            image = _image_part(body, self.headers.get("Content-Type", ""))
            self._json(HTTPStatus.OK, self.app.classify(image))
        except ImageTooLarge as err:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(err)})
        except InputError as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

    def _length(self) -> int | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return length if length >= 0 else None

    def _drain(self, length: int | None) -> bool:
        if not length or length > _DRAIN_LIMIT:
            return not length
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                return False
            length -= len(chunk)
        return True

    def _json(self, status: HTTPStatus, payload: dict[str, Any], close: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", close)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


def _image_part(body: bytes, content_type: str) -> bytes:
    """The image of a request: the body itself, or a multipart form's ``image`` field."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "image":
            return part.get_payload(decode=True) or b""
    raise InputError("multipart upload without an 'image' field")
