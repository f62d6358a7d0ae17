"""optuna-dashboard on the project's storage: live trials, learning curves, importances in a browser.

optuna-dashboard reads the same storage the sweeps write, so it can watch a running sweep: our
per-epoch validation accuracies are Optuna intermediate values and show as learning curves, and
each trial's kept model (:mod:`mnist_sweep.search.kept_models`) is listed, downloadable, on its page.
It has no authentication and its UI can delete studies, so it listens on loopback by default;
any other host gets a warning. It answers only requests addressed to it (the ``Host:`` header
names the address it serves, :func:`allowed_hosts`), so a web page cannot reach it through DNS
rebinding.

Example:
    >>> serve_dashboard("sqlite:///studies/mnist_sweep.db", port=8080)   # until Ctrl-C
"""

from __future__ import annotations

import errno
import socket
import sys
from socketserver import ThreadingMixIn
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mnist_sweep._base.hosts import allowed_hosts, bracketed, check_host, is_loopback
from mnist_sweep.errors import InputError
from mnist_sweep.search.kept_models import storage_artifact_store
from mnist_sweep.storage.rdb import open_storage, redact


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not hold up Ctrl-C


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """The dashboard polls every few seconds; one log line per request would drown the terminal."""


def make_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """The optuna-dashboard server for ``storage_url``, bound to ``host:port`` (0: a free port), not
    serving yet: ``serve_forever()`` it. Requests for another ``Host:`` get 403 (:func:`check_host`).

    Raises:
        InputError: the storage does not exist or cannot be opened, or the address cannot be bound
            (port in use, unknown host).
    """
    import optuna_dashboard  # its web app: loaded by this command only

    storage = open_storage(storage_url, create=False)
    app = optuna_dashboard.wsgi(storage, artifact_store=storage_artifact_store(storage))
    server_class = _Server6 if ":" in host else _Server
    try:
        httpd = make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as err:
        reason = "port already in use" if err.errno == errno.EADDRINUSE else (err.strerror or err)
        raise InputError(f"cannot listen on {host}:{port}: {reason}") from None
    httpd.set_app(check_host(app, allowed_hosts(host, httpd.server_port)))
    return httpd


def serve_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080, out: TextIO | None = None
                    ) -> None:
    """Serve optuna-dashboard for ``storage_url`` on ``host:port`` until interrupted (Ctrl-C).

    Prints the URL to ``out`` (default stdout) and a warning to stderr when ``host`` is not
    loopback. Ctrl-C raises ``KeyboardInterrupt`` after the socket is closed (the CLI exits 130).
    Only requests addressed to this server (``Host:`` one of :func:`allowed_hosts`) are answered.

    Raises:
        InputError: the storage does not exist or cannot be opened, or the address cannot be bound
            (port in use, unknown host).
    """
    out = out or sys.stdout
    httpd = make_dashboard(storage_url, host, port)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; optuna-dashboard has no "
              "authentication and anyone who can reach it can delete studies", file=sys.stderr)
    print(f"optuna-dashboard on {redact(storage_url)}: http://{bracketed(host)}:{httpd.server_port}/ "
          "(Ctrl-C to stop)", file=out, flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
