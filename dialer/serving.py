"""How the receiver listens on the public internet: what it takes from a connection, and for how long.

uvicorn's fast HTTP parser reads a request's head however long it is, waits for a body for ever,
keeps a connection that sends nothing (or a byte a minute) open for ever, and queues pipelined
requests without end. The receiver's protocol bounds each:

- A request's head past ``DIALER_WEBHOOK_MAX_HEAD`` bytes gets a 431, a pipelined request's head
  too. A head is counted as the parser reports it (the URL, each header with its colon and line
  end, the blank line), so a body is never taken for one; at most a slice (``FEED``) past the
  limit is parsed.
- A client that does not read its answers for ``DIALER_WEBHOOK_BODY_TIMEOUT`` seconds (the
  connection's write buffer full) is cut.
- A head not complete ``DIALER_WEBHOOK_HEAD_TIMEOUT`` seconds after it began (or after the
  connection opened, or after blank lines between requests began) closes the connection; it is
  timed from its turn (no earlier answer owed: a slow answer is not the client's doing).
- A body not complete ``DIALER_WEBHOOK_BODY_TIMEOUT`` seconds after its request began to run gets a
  408 (a pipelined request is not timed while it waits its turn).
- At most ``MAX_PIPELINED`` requests wait their turn behind the one running; more cut the connection.
- Past ``DIALER_WEBHOOK_MAX_CONNECTIONS`` connections at once (fewer if the open-file limit allows
  fewer), a new connection is answered 503 at once (a provider sends the callback again) and cut a
  second later; a connection held is never refused for the cap (uvicorn's own 503 would come to
  it between two of its requests).

An answer is never written out of turn: when a request is refused while an earlier one's answer is
still owed, the connection is cut instead, and the requests left unanswered are told that the client
left. A refusal is followed by closing the connection, and by cutting it if the client has not taken
the refusal within ``CLOSING_GRACE`` seconds. Idle keep-alive connections close after uvicorn's
keep-alive timeout (5 s). A client that leaves before its request's body came is one line in the log,
not a traceback. The process's open-file limit is raised to what the system allows, so that the
connections fit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections import deque
from http import HTTPStatus
from typing import Any, Literal

from starlette.requests import ClientDisconnect
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from dialer.settings import Settings, get_settings

log = logging.getLogger("dialer.receiver")

FILES_BESIDE_CONNECTIONS = 128
"""Open files the receiver needs besides its connections (the database's, logs, the loop, and the
connections past the cap, each held for ``SHED_LINGER`` seconds)."""
MAX_PIPELINED = 16
"""Requests that may wait their turn on a connection behind the one running."""
CLOSING_GRACE = 5.0
"""Seconds a refused client has to take its refusal before the connection is cut."""
SHED_LINGER = 1.0
"""Seconds a connection past the cap is kept after its 503: closed at once, the request the client
sends next would be answered with a reset, which can destroy the 503 before it is read."""
FEED = 1024
"""Bytes fed to the parser at a time: how far past the head limit a head may be read."""


def _answer(status: int, why: str) -> bytes:
    """A plain-text answer, the last on its connection."""
    body = why.encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Shedding:
    """Connections refused past the cap, logged in one line a second at most: a flood of connections
    must not become a flood of log lines."""

    def __init__(self) -> None:
        self._logged, self._held = -math.inf, 0

    def note(self, peer: str, cap: int) -> None:
        now = time.monotonic()
        if now - self._logged < 1.0:
            self._held += 1
            return
        log.warning(
            "%s: 503: the receiver holds %d connections at once (and refused %d more since the last line)",
            peer,
            cap,
            self._held,
        )
        self._logged, self._held = now, 0


_shedding = _Shedding()


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on a request's head (size and time), its body (time),
    the requests pipelined, and the connections held (module docstring)."""

    max_head: int | None = None
    head_timeout: float | None = None
    body_timeout: float | None = None
    closing_grace = CLOSING_GRACE
    shed_linger = SHED_LINGER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head = self.max_head or settings.webhook_max_head
        self._head_timeout = self.head_timeout or settings.webhook_head_timeout
        self._body_timeout = self.body_timeout or settings.webhook_body_timeout
        # uvicorn_options sets uvicorn's own limit one above ours: uvicorn's 503 then never comes
        # (it would come to a connection already held, between two of its requests).
        self._max_connections = self.limit_concurrency - 1 if self.limit_concurrency else None
        self._cycles: deque[RequestResponseCycle] = deque()  # this connection's requests, until answered
        # What the parser reads: the gap before a request (where blank lines may come), a head, a body.
        self._reading: Literal["gap", "head", "body"] = "gap"
        self._head_bytes = 0  # of the head being read, as the parser reported them
        self._unreported = 0  # bytes fed since the parser last reported a part of the head
        self._reported = False  # the parser reported a part of a head from the slice being fed
        self._ended = False  # refused, cut or shed: nothing more is read or answered
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._closing_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._app, self.app = self.app, self._run_app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._max_connections is not None and len(self.connections) > self._max_connections:
            self._shed()
        else:
            self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._closing_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # httptools reports a header only once it is whole, holding what came of it till then: the
        # data is fed a slice at a time, so that what the parser holds unreported is known to
        # within a slice.
        for start in range(0, len(data), FEED):
            if self._ended or self.transport.is_closing():
                return  # refused, cut or shed: the rest is not read
            if self._reading != "body" and not self._owed():
                self._start_head_timer()  # timed from its turn: a slow answer is not the client's
            piece = data[start : start + FEED]
            self._reported = False
            super().data_received(piece)
            if self._reading == "head":
                # Unless the parser reported a part of the head from this slice (what follows that
                # part is not known), the whole slice belongs to the part still unreported.
                self._unreported = 0 if self._reported else self._unreported + len(piece)
                if self._head_bytes + self._unreported > self._max_head:
                    self._head_too_big()

    def on_message_begin(self) -> None:
        self._reading, self._head_bytes, self._unreported, self._reported = "head", 0, 0, True
        if not self._owed():
            self._start_head_timer()  # a head begun in a slice that began in a body
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)  # the request line's method and version are not counted
        self._reported = True
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 3  # the colon and the line end (a space is optional)
        self._reported = True
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._ended:
            return  # refused: the rest of the slice starts nothing
        self._reading = "body"
        self._stop_head_timer()
        if self._head_bytes + 2 > self._max_head:  # the blank line ending the head
            self._head_too_big()
            return
        if len(self.pipeline) >= MAX_PIPELINED:
            self._drop(f"more than {MAX_PIPELINED} requests waiting their turn")
            return
        earlier = self.cycle
        super().on_headers_complete()
        if self.cycle is earlier:
            return  # an upgrade: no request
        self._cycles.append(self.cycle)
        if not (self.pipeline and self.pipeline[0][0] is self.cycle):
            self._start_body_timer()  # it runs now; a request waiting its turn is timed when it runs

    def on_body(self, body: bytes) -> None:
        if not self._ended:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._ended:
            return
        self._reading = "gap"
        self._stop_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        following = self.pipeline[-1][0] if self.pipeline else None  # the request uvicorn runs next
        super().on_response_complete()
        while self._cycles and self._cycles[0].response_complete:
            self._cycles.popleft()
        if following is not None and following.more_body and not self.transport.is_closing():
            self._start_body_timer()
        elif self._reading == "head" and not self._owed():
            self._start_head_timer()  # a head begun while an answer was owed is timed from now

    def pause_writing(self) -> None:
        # The client does not read its answers: one owed would wait for it for ever (uvicorn's
        # send has no time limit), holding the connection.
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._body_timeout, self._not_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _not_reading(self) -> None:
        self._write_timer = None
        self._drop(f"the client has not read its answers for {self._body_timeout:g} s")
        self.transport.abort()  # what is written cannot leave either

    def send_400_response(self, msg: str) -> None:
        self._drop(msg, 400)  # uvicorn's answer to a request it cannot parse: in turn too

    async def _run_app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        try:
            await self._app(scope, receive, send)
        except ClientDisconnect:
            # Starlette raises it where the receiver reads a body the client left before sending
            # (receiver._body); uvicorn would log it as an error, with a 40-line traceback.
            if not self._ended:  # a refusal or cut of ours, logged already
                log.warning("%s: left before its request's body came", self._peer())

    def _head_too_big(self) -> None:
        self._drop(f"a request's head is at most {self._max_head} bytes", 431)

    def _owed(self) -> bool:
        """Whether an answer is owed on this connection (a request runs or waits its turn)."""
        return any(not cycle.response_complete for cycle in self._cycles)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _start_body_timer(self) -> None:
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.flow.read_paused:  # uvicorn reads nothing while a request waits its turn
            self._start_head_timer()  # the head could not have come: it is not timed meanwhile
            return
        self._drop(f"no request head within {self._head_timeout:g} s")

    def _body_too_slow(self) -> None:
        self._body_timer = None
        request = self.cycle  # the request running, whose body is incomplete
        why = f"no request body within {self._body_timeout:g} s"
        # A request answered without its body (not found, too large) needs no answer more.
        self._drop(why, None if request.response_complete else 408, request)

    def _drop(self, why: str, status: int | None = None, request: RequestResponseCycle | None = None) -> None:
        """End the connection over ``why``, answering ``status`` if its turn has come (no answer is
        owed before it; ``request``: the refused request, when it runs already), else cutting it
        at once: an answer written while another is owed would be taken for that one."""
        if self._ended:
            return
        self._ended = True
        self._stop_head_timer()
        self._stop_body_timer()
        owed = any(not c.response_complete and (c is not request or c.response_started) for c in self._cycles)
        for cycle in self._cycles:
            if not cycle.response_complete:  # the app's answer goes nowhere; its reads learn the client left
                cycle.disconnected = True
                cycle.message_event.set()
        if owed:
            log.warning("%s: cut: %s (an answer was still owed)", self._peer(), why)
            self.transport.abort()
            return
        if status is None:
            log.warning("%s: closed: %s", self._peer(), why)
        else:
            log.warning("%s: %d %s", self._peer(), status, why)
            self.transport.write(_answer(status, why))
        self.transport.close()
        # Closing waits for the client to take what is written: one that does not read is cut.
        self._closing_timer = self.loop.call_later(self.closing_grace, self.transport.abort)

    def _shed(self) -> None:
        """Refuse a connection past the cap, at once: uvicorn would hold it until its request came,
        and past the open-file limit the event loop closes new connections unanswered and unlogged."""
        self._ended = True
        self.connections.discard(self)  # uvicorn's limit counts the connections held, not these
        _shedding.note(self._peer(), self._max_connections or 0)
        self.transport.write(_answer(503, "too many connections; try again"))
        # Cut, not closed: a client that does not read would hold the file for ever.
        self._closing_timer = self.loop.call_later(self.shed_linger, self.transport.abort)

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
    # The protocol takes its cap as one below uvicorn's limit, and refuses connections past it
    # itself: uvicorn's own check would refuse a request of a connection already held.
    return {"http": GuardedHttpTools, "limit_concurrency": connections + 1, "timeout_keep_alive": 5}
