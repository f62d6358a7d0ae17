"""optuna-dashboard on the project's storage: live trials, learning curves, importances in a browser.

optuna-dashboard reads the same storage the sweeps write, so it can watch a running sweep: our
per-epoch validation accuracies are Optuna intermediate values and show as learning curves, and
each trial's kept model (:mod:`mnist_sweep.kept_models`) is listed, downloadable, on its page.
It has no authentication and its UI can delete studies, so it listens on loopback by default;
any other host gets a warning. It answers only requests addressed to it (the ``Host:`` header
names the address it serves, :func:`allowed_hosts`), so a web page cannot reach it through DNS
rebinding.

Example:
    >>> serve("sqlite:///studies/mnist_sweep.db", port=8080)   # until Ctrl-C
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from socketserver import ThreadingMixIn
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mnist_sweep.errors import InputError
from mnist_sweep.storage import open_storage, redact


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not hold up Ctrl-C


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """The dashboard polls every few seconds; one log line per request would drown the terminal."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host:`` headers a server bound to ``host:port`` answers: the loopback names and ``host``
    itself, with the port (and without it on port 80); for a wildcard address (``0.0.0.0``, ``::``)
    also this machine's host name. Lower case.

    Example:
        >>> sorted(allowed_hosts("127.0.0.1", 8080))
        ['127.0.0.1:8080', '[::1]:8080', 'localhost:8080']
    """
    names = {"127.0.0.1", "localhost", "[::1]", _bracketed(host)}
    if host.strip("[]") in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
    names.discard("")
    with_port = {f"{name}:{port}" for name in names}
    return frozenset(h.lower() for h in (with_port | names if port == 80 else with_port))


def check_host(app: Any, allowed: frozenset[str]) -> Any:
    """``app`` (a WSGI application) answering 403 to any request whose ``Host:`` is not in ``allowed``.

    A web page the browser loaded from elsewhere can reach a server on loopback through DNS
    rebinding (its own name, re-pointed at 127.0.0.1), but its requests still carry that name in
    ``Host:``; refusing every other name closes the hole. A request without ``Host:`` is refused too.
    """

    def checked(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_HOST", "").lower() in allowed:
            return app(environ, start_response)
        body = (f"403: Host {environ.get('HTTP_HOST', '(none)')[:100]!r} is not this server's address; "
                f"use http://{sorted(allowed)[0]}/\n").encode()
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]

    return checked


def _bracketed(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def make_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """The optuna-dashboard server for ``storage_url``, bound to ``host:port`` (0: a free port), not
    serving yet: ``serve_forever()`` it. Requests for another ``Host:`` get 403 (:func:`check_host`).

    Raises:
        InputError: the storage does not exist or cannot be opened, or the address cannot be bound
            (port in use, unknown host).
    """
    import optuna_dashboard

    storage = open_storage(storage_url, create=False)
    from mnist_sweep.kept_models import storage_artifact_store

    app = optuna_dashboard.wsgi(storage, artifact_store=storage_artifact_store(storage))
    server_class = _Server6 if ":" in host else _Server
    try:
        httpd = make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as err:
        reason = "port already in use" if err.errno == errno.EADDRINUSE else (err.strerror or err)
        raise InputError(f"cannot listen on {host}:{port}: {reason}") from None
    httpd.set_app(check_host(app, allowed_hosts(host, httpd.server_port)))
    return httpd


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080, out: TextIO | None = None) -> None:
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
    print(f"optuna-dashboard on {redact(storage_url)}: http://{_bracketed(host)}:{httpd.server_port}/ "
          "(Ctrl-C to stop)", file=out, flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
