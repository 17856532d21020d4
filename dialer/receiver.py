"""The webhook receiver: one route for every provider's status and DTMF callbacks.

``/webhooks/{provider}/{token}/{kind}``: the token is the attempt's secret, so a callback is
authenticated (provider signature where there is one, and the token) before it is parsed or
stored. Bodies are read up to ``DIALER_WEBHOOK_MAX_BODY`` bytes (a provider's callback is a few
KB; more is refused with 413 before it is read whole). The access log names the route, never the
token: for CM.com, Routee and Cequens the token is the callback's only credential.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dialer.db import transaction
from dialer.errors import WebhookAuthError, WebhookPayloadError, WebhookUnsigned
from dialer.models import utcnow
from dialer.providers import PROVIDERS, get_provider
from dialer.providers.base import Webhook
from dialer.recorder import Received, record_webhooks
from dialer.settings import Settings, get_settings

if TYPE_CHECKING:
    from dialer.metrics import ReceiverMetrics

log = logging.getLogger("dialer.receiver")
GROUP_LIMIT = 64
"""Callbacks written in one transaction at most: a group holds its rows' locks until it commits."""
_Waiting = tuple[Received, asyncio.Future[Any]]
"""A callback taken, and the future its request waits on."""


class GroupWriter:
    """Callbacks recorded together: one thread takes every callback waiting (up to ``GROUP_LIMIT``),
    records them in one transaction, and answers each only once that transaction has committed.

    A burst of callbacks then costs one BEGIN and one COMMIT, one connection and one hand-over
    between threads, where each used to cost its own. If any callback of a group fails (a bad
    one, or the database refusing), the group is rolled back and each of its callbacks is
    recorded again alone, so one bad callback costs the others nothing but time.
    """

    def __init__(self, url: str, record: Callable[[sa.Connection, list[Received]], list[Any]]) -> None:
        self._url = url
        self._record = record
        self._waiting: queue.SimpleQueue[tuple[Received, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def record(self, callback: Received) -> Any:
        """Record ``callback``; its reply once it is committed, or the error it was refused with."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="dialer-group-writer", daemon=True)
            self._thread.start()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.put((callback, future))
        return await future

    def close(self) -> None:
        """Let the callbacks already taken finish, then stop the thread."""
        if self._thread is not None:
            self._waiting.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            group = [first]
            while len(group) < GROUP_LIMIT:
                try:
                    item = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._waiting.put(None)  # stop after this group
                    break
                group.append(item)
            pressed, rest = _first_presses(group)
            for part in (pressed, rest) if pressed and rest else (group,):
                if not self._written(part):
                    break

    def _written(self, group: list[_Waiting]) -> bool:
        """Write ``group`` and hand each its answer; False once nobody waits any more."""
        outcomes = self.write([callback for callback, _ in group])
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_answer, [future for _, future in group], outcomes)
        except RuntimeError:  # the server's loop is closed: nobody waits for these answers
            return False
        return True

    def write(self, group: list[Received]) -> list[tuple[bool, Any]]:
        """Record ``group`` in one transaction (each alone if that fails): each callback's
        (True, reply), or (False, the error it was refused with)."""
        # In the order of their tokens (a call's callbacks keep theirs): groups written at once by
        # other processes then lock the same attempts in the same order. A group that deadlocks
        # all the same is rolled back and written again callback by callback, like any failure.
        order = sorted(range(len(group)), key=lambda index: group[index].token)
        try:
            with transaction(self._url) as connection:
                replies = self._record(connection, [group[index] for index in order])
        except Exception as error:
            if len(group) == 1:
                return [(False, error)]
            return [self._alone(callback) for callback in group]
        in_order = dict(zip(order, replies, strict=True))
        return [(True, in_order[index]) for index in range(len(group))]

    def _alone(self, callback: Received) -> tuple[bool, Any]:
        try:
            with transaction(self._url) as connection:
                return True, self._record(connection, [callback])[0]
        except Exception as error:
            return False, error


def _first_presses(group: list[_Waiting]) -> tuple[list[_Waiting], list[_Waiting]]:
    """The key presses of a group that no earlier callback of their call precedes, and the rest.

    A key press waits for its reply (the call's next step; Routee gives up after 3 s): these are
    written first, in a transaction of their own, and answered at once. A call's callbacks keep
    their order: a press behind another callback of its call waits with it (keys pressed after a
    call ended busy are refused).
    """
    seen: set[str] = set()
    pressed: list[_Waiting] = []
    rest: list[_Waiting] = []
    for item in group:
        callback = item[0]
        urgent = callback.webhook.kind in callback.provider.input_kinds and callback.token not in seen
        (pressed if urgent else rest).append(item)
        seen.add(callback.token)
    return pressed, rest


def _answer(futures: list[asyncio.Future[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.done():  # its request was given up (the client left)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class _TooLarge(Exception):
    """A callback bigger than any provider sends."""


async def _body(request: Request, limit: int) -> bytes:
    """The request's body (a GET's query string), refused past ``limit`` bytes before it is all read."""
    if request.method != "POST":
        query = request.url.query.encode()
        if len(query) > limit:
            raise _TooLarge
        return query
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def create_app(settings: Settings, metrics: ReceiverMetrics | None = None) -> Starlette:
    """The receiver as an ASGI app; settings with which no callback could be accepted are refused.
    With ``metrics``, each callback's time to its answer and its status code are counted."""
    routes = {route: get_provider(route) for route in settings.routes(PROVIDERS)}
    for name, provider in routes.items():
        if provider.check_settings is not None:
            provider.check_settings(settings.provider_settings(name))
    grace = timedelta(seconds=settings.webhook_grace)

    def record(connection: sa.Connection, callbacks: list[Received]) -> list[Any]:
        return record_webhooks(
            connection, callbacks, now=utcnow(), public_url=settings.public_url, grace=grace
        )

    writer = GroupWriter(settings.database_url, record)

    async def webhook(request: Request) -> Response:
        arrived = time.perf_counter()
        name, token, kind = (request.path_params[key] for key in ("provider", "token", "kind"))
        route = f"{request.method} /webhooks/{name}/…/{kind}"  # never the token

        def answer(response: Response, problem: object = None) -> Response:
            if metrics is not None:  # a made-up provider name is not a label of its own
                label = name if name in routes else "unknown"
                metrics.observe(label, response.status_code, time.perf_counter() - arrived)
            if problem is None:
                log.info("%s %s", route, response.status_code)
            else:
                log.warning("%s %s: %s", route, response.status_code, problem)
            return response

        provider = routes.get(name)
        if provider is None or kind not in provider.webhook_kinds:
            return answer(PlainTextResponse("no such callback", status_code=404), "no such callback")
        query = request.query_params
        if len(query.multi_items()) != len(query):
            return answer(
                PlainTextResponse("a query parameter is repeated", status_code=400), "ambiguous query"
            )
        try:
            body = await _body(request, settings.webhook_max_body)
        except _TooLarge:
            limit = f"a callback is at most {settings.webhook_max_body} bytes"
            return answer(PlainTextResponse(limit, status_code=413), limit)
        hook = Webhook(
            kind=kind, method=request.method, headers=dict(request.headers), query=dict(query), body=body
        )
        try:
            reply = await writer.record(Received(provider, settings.provider_settings(name), token, hook))
        except WebhookAuthError as error:
            return answer(PlainTextResponse("unauthorised", status_code=401), error)
        except WebhookUnsigned as error:
            # Vonage asks for a 5xx here: it sends the callback again, signed this time, we hope.
            return answer(PlainTextResponse("a signature is required", status_code=503), error)
        except WebhookPayloadError as error:
            return answer(PlainTextResponse(str(error), status_code=400), error)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            # The database is unavailable: the provider should come again.
            return answer(
                PlainTextResponse("try again later", status_code=503, headers={"Retry-After": "5"}),
                f"database unavailable: {error.__class__.__name__}",
            )
        if reply is None:
            return answer(Response(status_code=204))
        return answer(JSONResponse(reply))

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, writer.close)

    app = Starlette(
        routes=[
            Route("/webhooks/{provider}/{token}/{kind}", webhook, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.writer = writer
    return app


def app_from_settings() -> Starlette:
    """The receiver with the process's settings (each process of ``dialer serve --workers N``)."""
    logging.getLogger("dialer.receiver").setLevel(logging.INFO)
    return create_app(get_settings())
