"""A stand-in application for simulator tests: it keeps every callback and answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.embedded import BackgroundServer


@dataclass(frozen=True)
class Received:
    path: str
    method: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Application:
    """Answers ``reply(received)`` (a JSON value, or None for an empty 204) on any path."""

    reply: Callable[[Received], Any] = lambda _: None
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            received = Received(
                request.url.path,
                request.method,
                dict(request.headers),
                dict(request.query_params),
                await request.body(),
            )
            with self._lock:
                self.received.append(received)
            answer = self.reply(received)
            return Response(status_code=204) if answer is None else JSONResponse(answer)

        return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [received for received in self.received if received.path == path]

    def wait_for(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := check()):
            assert time.monotonic() < deadline, f"timed out; received {[r.path for r in self.received]}"
            time.sleep(0.02)
        return value


@contextmanager
def application(reply: Callable[[Received], Any] = lambda _: None) -> Iterator[tuple[Application, str]]:
    """The application on a free loopback port, with its base URL."""
    stand_in = Application(reply=reply)
    with BackgroundServer(stand_in.app()) as server:
        yield stand_in, server.url
