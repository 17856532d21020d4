"""How the receiver listens on the public internet: what it takes from a connection, and for how long.

uvicorn's fast HTTP parser reads a request's head however long it is, and keeps a connection
that sends nothing (or a byte a minute) open for ever. The receiver's protocol bounds both: a
request's line and headers past ``DIALER_WEBHOOK_MAX_HEAD`` bytes get a 431 and the connection is
closed before more is read, and a head not complete ``DIALER_WEBHOOK_HEAD_TIMEOUT`` seconds after
it began (or after the connection opened) closes the connection. Idle keep-alive connections
close after uvicorn's keep-alive timeout (5 s), and past ``DIALER_WEBHOOK_MAX_CONNECTIONS``
connections at once a request gets a 503 (a provider sends it again). The process's open-file
limit is raised to what the system allows, so that the connections fit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dialer.settings import Settings, get_settings

log = logging.getLogger("dialer.receiver")

FILES_BESIDE_CONNECTIONS = 128
"""Open files the receiver needs besides its connections (the database's, logs, the loop)."""


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request's head, in size and in time."""

    max_head: int | None = None
    head_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head = self.max_head or settings.webhook_max_head
        self._head_timeout = self.head_timeout or settings.webhook_head_timeout
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self._max_head:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    f"a request's head is at most {self._max_head} bytes",
                )
                return
            self._start_head_timer()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0  # the next request's head, when it comes
        super().on_response_complete()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            log.warning("%s: closed: no request head within %g s", self._peer(), self._head_timeout)
            self.transport.close()

    def _refuse(self, status: int, reason: bytes, why: str) -> None:
        log.warning("%s: %s %s", self._peer(), status, why)
        body = why.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self._stop_head_timer()
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


def raise_open_files() -> int:
    """Raise this process's open-file limit to the system's most; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The receiver's uvicorn settings: the guarded protocol, the cap on connections (within the
    open-file limit, raised first), the keep-alive bound."""
    files = raise_open_files()
    connections = settings.webhook_max_connections
    if connections + FILES_BESIDE_CONNECTIONS > files:
        fits = max(16, files - FILES_BESIDE_CONNECTIONS)
        log.warning(
            "%d open files are allowed here: the receiver takes %d connections at once, not %d"
            " (raise `ulimit -n`, or DIALER_WEBHOOK_MAX_CONNECTIONS)",
            files,
            fits,
            connections,
        )
        connections = fits
    return {"http": GuardedHttpTools, "limit_concurrency": connections, "timeout_keep_alive": 5}
