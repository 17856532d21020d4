"""The frameworks' floor for bench/webhooks.py: Starlette on uvicorn, reading each callback's body
(JSON parsed) and answering 204, on the same route and the same uvicorn settings as ``dialer serve``,
with no database.

    python bench/bare_receiver.py PORT [DATABASE_URL]

With a database: each body is also inserted into a table of its own, and committed before the 204,
through the receiver's group writer (callbacks waiting are committed together). That is the floor
of any receiver that keeps what it answers, less the recording's own work: authentication,
finding the call, its status changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dialer import db
from dialer.providers import PROVIDERS
from dialer.providers.base import Webhook
from dialer.receiver import GroupWriter
from dialer.recorder import Received


def durable(url: str) -> GroupWriter:
    """A group writer that inserts each callback's body, and nothing else."""
    table = sa.Table(
        "bare_event", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text)
    )
    table.create(db.get_engine(url), checkfirst=True)

    def keep(connection: sa.Connection, callbacks: list[Received]) -> list[Any]:
        connection.execute(table.insert(), [{"body": each.webhook.body.decode()} for each in callbacks])
        return [None] * len(callbacks)

    return GroupWriter(url, keep)


def app(url: str | None = None) -> Starlette:
    writer = durable(url) if url is not None else None

    async def webhook(request: Request) -> Response:
        body = await request.body() if request.method == "POST" else request.url.query.encode()
        if body[:1] in (b"{", b"["):
            json.loads(body)
        if writer is not None:
            name, token = request.path_params["provider"], request.path_params["token"]
            hook = Webhook(kind="event", method=request.method, headers={}, query={}, body=body)
            await writer.record(Received(PROVIDERS[name], None, token, hook))
        return Response(status_code=204)

    return Starlette(routes=[Route("/webhooks/{provider}/{token}/{kind}", webhook, methods=["GET", "POST"])])


if __name__ == "__main__":
    database = sys.argv[2] if len(sys.argv) > 2 else None
    uvicorn.run(app(database), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
