"""Which hosts a local server answers: loopback checks and the ``Host:`` header guard shared by
the dashboard, ``serve`` and the storage proxy (a page elsewhere cannot reach them by DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

#: Names that always mean this machine.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.lower() in _LOOPBACK_NAMES:
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
    names = {"127.0.0.1", "localhost", "[::1]", bracketed(host)}
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


def bracketed(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host
