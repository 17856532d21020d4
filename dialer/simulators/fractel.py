"""A Fractel FoneStorm stand-in: /v2/auth tokens, send_notify registration, calls and callbacks.

Written from the seed document (send a voice call) and the FoneStorm 2.4 Swagger spec (paths,
form bodies, the auth and error answers, send_notify). The create request answers "when the call
connects", as the documents say: once the callee answers, or once the call has failed to connect,
so it lasts as long as the ringing; the BEGIN callback comes before that answer. Numbers are 7 to
15 digits once non-digits are dropped (``011`` + country code + number for international calls);
a FoneNumber is the 10 digits every published example shows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer.settings import FractelSettings
from dialer.simulators.base import Script, Simulation, callback_client

DOCUMENTED_LIMIT = 10.0
"""Requests per second: FoneStorm's documented limit: 10 requests per second on a standard account."""

_SERVICE_TYPES = {"Device", "VoiceMail", "SoundFile", "TTS", "Phonenumber"}
_DISPOSITION = {
    "completed": "ANSWERED",
    "busy": "BUSY",
    "no_answer": "NO_ANSWER",
    "failed": "FAILED:503",
    "rejected": "REJECTED",
}


@dataclass(frozen=True)
class _Notify:
    url: str
    method: str
    username: str | None
    password: str | None


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, "status_code": status}, status_code=status)


UNCONNECTED_4XX = "4xx"
"""``Simulation.readings["unconnected"]``: how a call that never connects is answered. The seed says
the API "returns with the call ID" when the call connects; for one that does not (busy, not
answered, rejected) it answers 201 all the same by default, its END callback telling how it
ended, or, with this reading, an error naming the disposition (the callbacks are sent as ever)."""


def e164(dialled: str) -> str:
    """The number a dial string reaches: 1 + 10 digits is North American, 011 + digits international."""
    if dialled.startswith("011"):
        return "+" + dialled[3:]
    return "+" + dialled


async def _body(request: Request) -> dict[str, Any]:
    """A form body (as the 2.4 spec consumes), or JSON."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


def _fonenumber(body: dict[str, Any]) -> str | None:
    """The request's FoneNumber: 10 digits, as every published example writes it."""
    value = str(body.get("fonenumber", ""))
    return value if re.fullmatch(r"\d{10}", value) else None


def validate(body: dict[str, Any]) -> str | None:
    if _fonenumber(body) is None:
        return "fonenumber must be one of your FoneNumbers (10 digits)"
    to = re.sub(r"\D", "", str(body.get("to", "")))
    if not (7 <= len(to) <= 15 or 1 <= len(to) <= 6):
        return "to must be a valid phone number (7 to 15 digits) or a speed dial (1 to 6 digits)"
    if body.get("service_type") not in _SERVICE_TYPES:
        return f"service_type must be one of {', '.join(sorted(_SERVICE_TYPES))}"
    service_id = str(body.get("service_id") or "")
    if not service_id:
        return "service_id is required"
    if body["service_type"] == "SoundFile" and not (
        service_id.startswith(("http://", "https://")) and service_id.lower().endswith(".wav")
    ):
        return "service_id must be the URL of a WAV file"
    return None


def create_app(sim: Simulation, settings: FractelSettings) -> Starlette:
    if settings.password is None:
        raise ValueError("the Fractel simulator needs the user name and password")
    tokens: dict[str, float] = {}
    notify: dict[str, _Notify] = {}
    client = callback_client()

    async def auth(request: Request) -> JSONResponse:
        body = await _body(request)
        assert settings.password is not None
        if (
            body.get("username") != settings.username
            or body.get("password") != settings.password.get_secret_value()
        ):
            return _error(401, "Unauthorized", "Invalid username or password")
        expires = int(str(body.get("expires") or 3600)) if str(body.get("expires") or 1).isdigit() else 0
        if not 1 <= expires <= 86400:
            return _error(400, "Bad Request", "expires must be between 1 and 86400")
        token = secrets.token_urlsafe(32)
        tokens[token] = time.monotonic() + expires
        return JSONResponse({"auth": {"token": token}}, status_code=201)  # the 2.4 spec's answer

    def authorised(request: Request) -> bool:
        return tokens.get(request.headers.get("token", ""), 0) > time.monotonic()

    async def send_notify(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "Unauthorized", "A valid token header is required")
        body = await _body(request)
        fonenumber = _fonenumber(body)
        if fonenumber is None or not str(body.get("url", "")).startswith(("http://", "https://")):
            return _error(400, "Bad Request", "fonenumber (10 digits) and url are required")
        method = str(body.get("method", ""))
        if method not in ("GET", "POST", "JSON"):
            return _error(400, "Bad Request", "method must be GET, POST or JSON")
        notify[fonenumber] = _Notify(body["url"], method, body.get("url_username"), body.get("url_password"))
        options = {"send_notify": {"url": body["url"], "method": method}}
        return JSONResponse({"fonenumber": {"fonenumber": fonenumber, "voice_options": options}})

    async def tell(fonenumber: str, payload: dict[str, Any]) -> None:
        target = notify.get(fonenumber)
        if target is None:
            return
        headers = {}
        if target.username is not None:
            pair = f"{target.username}:{target.password or ''}"
            headers["Authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
        if target.method == "GET":
            request = client.build_request("GET", target.url, params=payload, headers=headers)
        elif target.method == "POST":
            request = client.build_request("POST", target.url, data=payload, headers=headers)
        else:
            request = client.build_request("POST", target.url, json=payload, headers=headers)
        await sim.deliver(client, request)

    async def run(
        body: dict[str, Any], call_id: str, script: Script, connected: asyncio.Event, ended: dict[str, str]
    ) -> None:
        fonenumber = str(body["fonenumber"])
        base = {
            "uid": call_id,
            "account_code": settings.username,
            "from": fonenumber,
            "to": re.sub(r"\D", "", str(body["to"])),
            "direction": "OUTBOUND",
            "type": "VOICE",
        }

        async def conversation() -> None:
            if body["service_type"] != "Phonenumber":
                await sim.pause(min(len(str(body["service_id"])) / 15, 20))
                return
            # The callee is connected to the other number: the call lasts as long as that leg
            # talks, or rings out if nobody answers there.
            other = sim.transfer(e164(re.sub(r"\D", "", str(body["service_id"]))), str(uuid.uuid4()))
            await sim.pause(other.ring_seconds if other.behaviour != "answered" else other.talk_seconds)

        async def emit(stage: str, *, duration: int = 0, **_: Any) -> None:
            if stage == "started":
                await tell(fonenumber, base | {"status": "BEGIN"})
                return
            if stage in _DISPOSITION and not connected.is_set():
                ended["disposition"] = _DISPOSITION[stage]  # over before it connected
            if stage == "answered" or stage in _DISPOSITION:
                connected.set()  # the create request answers now
            if stage in _DISPOSITION:
                end = {"status": "END", "disposition": _DISPOSITION[stage], "billable_seconds": duration}
                await tell(fonenumber, base | end)

        try:
            await sim.run_call(script, ring_timeout=30.0, emit=emit, conversation=conversation)
        finally:
            connected.set()

    async def call(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "Unauthorized", "A valid token header is required")
        if (interference := await sim.interfere()) is not None:
            return interference
        if not sim.admit():
            return _error(429, "Too Many Requests", f"The limit is {sim.rate_limit:g} requests per second")
        body = await _body(request)
        if problem := validate(body):
            return _error(400, "Bad Request", problem)
        call_id = str(uuid.uuid4())
        script = sim.place(e164(re.sub(r"\D", "", str(body["to"]))), call_id)
        connected, ended = asyncio.Event(), dict[str, str]()
        sim.spawn(run(body, call_id, script, connected, ended))
        await connected.wait()  # "When the call connects, the API returns with the call ID"
        if "disposition" in ended and sim.readings.get("unconnected") == UNCONNECTED_4XX:
            return _error(400, "Bad Request", f"The call was not connected: {ended['disposition']}")
        return JSONResponse({"call": {"id": call_id}}, status_code=201)

    return Starlette(
        routes=[
            Route("/v2/auth", auth, methods=["POST"]),
            Route("/v2/calls/send_notify", send_notify, methods=["POST"]),
            Route("/v2/calls", call, methods=["POST"]),
            *sim.routes(),
        ],
        lifespan=sim.lifespan(client),
    )
