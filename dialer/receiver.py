"""The webhook receiver: one route for every provider's status and DTMF callbacks.

``/webhooks/{provider}/{token}/{kind}``: the token is the attempt's secret, so a callback is
authenticated (provider signature where there is one, and the token) before it is parsed or
stored. Bodies are read up to ``DIALER_WEBHOOK_MAX_BODY`` bytes (a provider's callback is a few
KB; more is refused with 413 before it is read whole). The access log names the route, never the
token: for CM.com, Routee and Cequens the token is the callback's only credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dialer.db import transaction
from dialer.errors import WebhookAuthError, WebhookPayloadError, WebhookUnsigned
from dialer.models import utcnow
from dialer.providers import PROVIDERS
from dialer.providers.base import Webhook
from dialer.recorder import record_webhook
from dialer.settings import Settings, get_settings

if TYPE_CHECKING:
    from dialer.metrics import ReceiverMetrics

log = logging.getLogger("dialer.receiver")
RECORDING_THREADS = 4
"""Threads writing callbacks at once (bench/webhooks.py on PostgreSQL: 4 gave 195 callbacks/s,
2 gave 183, anyio's default 40 gave 120)."""


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
    for name, provider in PROVIDERS.items():
        if provider.check_settings is not None:
            provider.check_settings(settings.provider_settings(name))
    grace = timedelta(seconds=settings.webhook_grace)

    def record(provider_name: str, token: str, webhook: Webhook) -> Any:
        provider = PROVIDERS[provider_name]
        with transaction(settings.database_url) as connection:
            return record_webhook(
                connection,
                provider=provider,
                settings=settings.provider_settings(provider_name),
                token=token,
                webhook=webhook,
                now=utcnow(),
                public_url=settings.public_url,
                grace=grace,
            )

    async def webhook(request: Request) -> Response:
        arrived = time.perf_counter()
        name, token, kind = (request.path_params[key] for key in ("provider", "token", "kind"))
        route = f"{request.method} /webhooks/{name}/…/{kind}"  # never the token

        def answer(response: Response, problem: object = None) -> Response:
            if metrics is not None:  # a made-up provider name is not a label of its own
                label = name if name in PROVIDERS else "unknown"
                metrics.observe(label, response.status_code, time.perf_counter() - arrived)
            if problem is None:
                log.info("%s %s", route, response.status_code)
            else:
                log.warning("%s %s: %s", route, response.status_code, problem)
            return response

        provider = PROVIDERS.get(name)
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
            reply = await run_in_threadpool(record, name, token, hook)
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
        # Each callback's write runs in a worker thread; anyio's default of 40 threads only
        # contend for the GIL and the database's connections.
        anyio.to_thread.current_default_thread_limiter().total_tokens = RECORDING_THREADS
        yield

    return Starlette(
        routes=[
            Route("/webhooks/{provider}/{token}/{kind}", webhook, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def app_from_settings() -> Starlette:
    """The receiver with the process's settings (each process of ``dialer serve --workers N``)."""
    logging.getLogger("dialer.receiver").setLevel(logging.INFO)
    return create_app(get_settings())
