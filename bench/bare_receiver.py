"""The frameworks' floor for bench/webhooks.py: Starlette on uvicorn, reading each callback's body
(JSON parsed) and answering 204, on the same route and the same uvicorn settings as ``dialer serve``,
with no database.

    python bench/bare_receiver.py PORT
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    body = await request.body() if request.method == "POST" else request.url.query.encode()
    if body[:1] in (b"{", b"["):
        json.loads(body)
    return Response(status_code=204)


app = Starlette(routes=[Route("/webhooks/{provider}/{token}/{kind}", webhook, methods=["GET", "POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
