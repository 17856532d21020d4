"""The webhook receiver: one route for every provider's status and DTMF callbacks.

``/webhooks/{provider}/{token}/{kind}``: the token is the attempt's secret, so a callback is
authenticated (provider signature where there is one, and the token) before it is stored.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dialer.db import session_scope
from dialer.errors import WebhookAuthError, WebhookPayloadError, WebhookUnsigned
from dialer.models import utcnow
from dialer.providers import PROVIDERS
from dialer.providers.base import Webhook
from dialer.recorder import record_webhook
from dialer.settings import Settings

log = logging.getLogger("dialer.receiver")


def create_app(settings: Settings) -> Starlette:
    """The receiver as an ASGI app; settings with which no callback could be accepted are refused."""
    for name, provider in PROVIDERS.items():
        if provider.check_settings is not None:
            provider.check_settings(settings.provider_settings(name))

    def record(provider_name: str, token: str, webhook: Webhook) -> Any:
        provider = PROVIDERS[provider_name]
        with session_scope(settings.database_url) as session:
            return record_webhook(
                session,
                provider=provider,
                settings=settings.provider_settings(provider_name),
                token=token,
                webhook=webhook,
                now=utcnow(),
                public_url=settings.public_url,
            )

    async def webhook(request: Request) -> Response:
        name, token, kind = (request.path_params[key] for key in ("provider", "token", "kind"))
        provider = PROVIDERS.get(name)
        if provider is None or kind not in provider.webhook_kinds:
            return PlainTextResponse("no such callback", status_code=404)
        body = await request.body() if request.method == "POST" else request.url.query.encode()
        hook = Webhook(
            kind=kind,
            method=request.method,
            headers=dict(request.headers),
            query=dict(request.query_params),
            body=body,
        )
        try:
            reply = await run_in_threadpool(record, name, token, hook)
        except WebhookAuthError as error:
            log.warning("%s %s callback refused: %s", name, kind, error)
            return PlainTextResponse("unauthorised", status_code=401)
        except WebhookUnsigned as error:
            # Vonage asks for a 5xx here: it sends the callback again, signed this time, we hope.
            log.warning("%s %s callback refused: %s", name, kind, error)
            return PlainTextResponse("a signature is required", status_code=503)
        except WebhookPayloadError as error:
            log.warning("%s %s callback malformed: %s", name, kind, error)
            return PlainTextResponse(str(error), status_code=400)
        if reply is None:
            return Response(status_code=204)
        return JSONResponse(reply)

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/webhooks/{provider}/{token}/{kind}", webhook, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
