"""An HTTP/1.1 server whose connections cost no thread while they send: ``serve``'s front.

``http.server``'s ``ThreadingHTTPServer`` gives each connection a thread that blocks while the
client sends, with no limit and no timeout: 150 uploads that stall half-way hold 150 threads and
their buffers for as long as the clients like. Here one asyncio loop reads every connection's
request (headers, then a body of at most ``max_bytes``; a larger one is read and dropped up to
``drain_limit``, so the client gets its 413), with a deadline on each read and a cap on open
connections; only a request that has fully arrived goes to a small pool of threads, where the
standard library's ``BaseHTTPRequestHandler`` subclass answers it from memory, as it would from a
socket. Threads: the loop's, plus ``workers``.

Example:
    >>> server = BoundedHTTPServer(("127.0.0.1", 0), Handler, max_bytes=10 << 20)
    >>> server.serve_forever()   # until server.shutdown() from another thread, or Ctrl-C
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import re
import socket
import threading
from typing import Any

#: Seconds a client may take to send a request's headers, and may stay silent while sending its body.
READ_TIMEOUT_S = 20.0
#: Open connections at once; more are closed as they come.
MAX_CONNECTIONS = 512
_HEADER_LIMIT = 64 * 1024
_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)


class BoundedHTTPServer:
    """Serve ``handler_class`` (a ``BaseHTTPRequestHandler`` subclass) on ``address`` (see the module docstring).

    Attributes as ``socketserver``'s: ``server_address``, ``server_port``, ``RequestHandlerClass``.
    """

    def __init__(self, address: tuple[str, int], handler_class: type, *, max_bytes: int, drain_limit: int,
                 workers: int = 4, family: int = socket.AF_INET) -> None:
        self.RequestHandlerClass = handler_class
        self.max_bytes, self.drain_limit = max_bytes, drain_limit
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(256)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()[:2]
        self.server_port = self.server_address[1]
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="serve")
        self._open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        asyncio.run(self._main())

    def shutdown(self) -> None:
        self._stopped.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: None)

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.socket.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self._connection, sock=self.socket, limit=_HEADER_LIMIT)
        async with server:
            while not self._stopped.is_set():
                await asyncio.sleep(0.2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass  # a client too slow, gone, or sending garbage: drop it
        finally:
            self._open -= 1
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request, have it answered, write the answer; False when the connection ends."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        found = _LENGTH.search(head)
        length = int(found[1]) if found else 0
        body = b""
        if length <= self.max_bytes:
            body = await self._read(reader, length, keep=True)
        elif length <= self.drain_limit:
            await self._read(reader, length, keep=False)  # dropped: the handler answers 413
        answer, close = await asyncio.get_running_loop().run_in_executor(self._pool, self._answer, head + body)
        writer.write(answer)
        await writer.drain()
        return not close and length <= self.drain_limit

    async def _read(self, reader: asyncio.StreamReader, length: int, keep: bool) -> bytes:
        parts = []
        while length > 0:
            chunk = await asyncio.wait_for(reader.read(min(length, 1 << 20)), READ_TIMEOUT_S)
            if not chunk:
                raise ConnectionError("client closed mid-body")
            length -= len(chunk)
            if keep:
                parts.append(chunk)
        return b"".join(parts)

    def _answer(self, request: bytes) -> tuple[bytes, bool]:
        handler = _InMemory(request, self)
        return handler.answer(), handler.close_connection


class _InMemory:
    """Runs the handler class on one request held in memory; ``answer()`` is what it wrote."""

    def __init__(self, request: bytes, server: BoundedHTTPServer) -> None:
        self.request, self.server = request, server
        self.close_connection = True

    def answer(self) -> bytes:
        out = io.BytesIO()
        handler: Any = self.server.RequestHandlerClass.__new__(self.server.RequestHandlerClass)
        handler.server, handler.client_address, handler.request = self.server, ("", 0), None
        handler.rfile, handler.wfile = io.BytesIO(self.request), out
        handler.handle_one_request()
        handler.wfile.flush()
        self.close_connection = bool(handler.close_connection)
        return out.getvalue()
