"""A Vonage Voice API v1 stand-in: the same paths, JWT auth, validation and event/input webhooks.

It checks each request against the public API reference (not against our adapter): an
application JWT signed RS256 by the application's key, ``to``/``from``/``ncco`` shapes and ranges,
a calls-per-second limit answered with 429, then plays the call and sends signed callbacks.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer.settings import VonageSettings
from dialer.simulators.base import Script, Simulation

DOCUMENTED_LIMIT = 3.0
"""Requests per second: Vonage's documented default: 3 calls per second (429 beyond)."""

_NUMBER = re.compile(r"^\d{7,15}$")
_ERRORS = "https://developer.nexmo.com/api-errors"


def sign_webhook(body: bytes, *, secret: str, api_key: str, now: float | None = None) -> str:
    """The ``Authorization`` bearer JWT Vonage puts on a signed callback."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iat": issued,
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": api_key,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"{_ERRORS}#{kind}", "title": title, "detail": detail, "instance": str(uuid.uuid4())}
    return JSONResponse(body | extra, status_code=status)


def _invalid(name: str, reason: str) -> JSONResponse:
    return _problem(
        400,
        "validation",
        "Bad Request",
        "The request failed due to validation errors",
        invalid_parameters=[{"name": name, "reason": reason}],
    )


def _check_endpoint(value: Any, name: str) -> str | None:
    if not isinstance(value, dict) or value.get("type") != "phone":
        return f"{name} must be an object with type phone"
    if not _NUMBER.match(str(value.get("number", ""))):
        return f"{name}.number must be 7 to 15 digits"
    return None


def _check_action(action: Any, index: int) -> str | None:
    where = f"ncco[{index}]"
    if not isinstance(action, dict):
        return f"{where} must be an object"
    kind = action.get("action")
    if kind == "talk":
        text = action.get("text")
        if not isinstance(text, str) or not 0 < len(text) <= 1500:
            return f"{where}.text is required, at most 1500 characters"
        level = action.get("level", 0)
        if not isinstance(level, int | float) or not -1 <= float(level) <= 1:
            return f"{where}.level must be between -1 and 1"
    elif kind == "stream":
        urls = action.get("streamUrl")
        if not isinstance(urls, list) or len(urls) != 1 or not str(urls[0]).startswith("http"):
            return f"{where}.streamUrl must be an array with one URL"
    elif kind == "input":
        if "dtmf" not in (action.get("type") or []):
            return f"{where}.type must include dtmf"
        dtmf = action.get("dtmf", {})
        if not 1 <= int(dtmf.get("maxDigits", 4)) <= 20:
            return f"{where}.dtmf.maxDigits must be 1 to 20"
        if not 0 <= int(dtmf.get("timeOut", 3)) <= 10:
            return f"{where}.dtmf.timeOut must be 0 to 10"
        urls = action.get("eventUrl")
        if not isinstance(urls, list) or not urls:
            return f"{where}.eventUrl must be an array of URLs"
    elif kind not in ("notify", "record", "conversation", "connect"):
        return f"{where}.action {kind!r} is not a known NCCO action"
    return None


def validate_create(body: Any) -> tuple[str, str] | None:
    """The first problem with a create-call body, as (parameter, reason), or None."""
    if not isinstance(body, dict):
        return "body", "must be a JSON object"
    to = body.get("to")
    if not isinstance(to, list) or not to:
        return "to", "is required and must be a non-empty array"
    for endpoint in to:
        if problem := _check_endpoint(endpoint, "to"):
            return "to", problem
    if ("from" in body) == bool(body.get("random_from_number")):
        return "from", "give exactly one of from or random_from_number"
    if "from" in body and (problem := _check_endpoint(body["from"], "from")):
        return "from", problem
    if ("ncco" in body) == ("answer_url" in body):
        return "ncco", "give exactly one of ncco or answer_url"
    if "ncco" in body:
        if not isinstance(body["ncco"], list) or not body["ncco"]:
            return "ncco", "must be a non-empty array"
        for index, action in enumerate(body["ncco"]):
            if problem := _check_action(action, index):
                return "ncco", problem
    event_url = body.get("event_url")
    if not isinstance(event_url, list) or len(event_url) != 1 or not str(event_url[0]).startswith("http"):
        return "event_url", "must be an array with one URL"
    if body.get("event_method", "POST") not in ("POST", "GET"):
        return "event_method", "must be POST or GET"
    if body.get("machine_detection", "continue") not in ("continue", "hangup"):
        return "machine_detection", "must be continue or hangup"
    if not 1 <= int(body.get("length_timer", 7200)) <= 86400:
        return "length_timer", "must be 1 to 86400"
    if not 1 <= int(body.get("ringing_timer", 60)) <= 120:
        return "ringing_timer", "must be 1 to 120"
    return None


@dataclass
class _Call:
    uuid: str
    conversation_uuid: str
    to: str
    caller: str
    body: dict[str, Any]
    script: Script
    status: str = "started"
    started: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        return {
            "_links": {"self": {"href": f"/calls/{self.uuid}"}},
            "uuid": self.uuid,
            "conversation_uuid": self.conversation_uuid,
            "to": {"type": "phone", "number": self.to},
            "from": {"type": "phone", "number": self.caller},
            "status": self.status,
            "direction": "outbound",
            **self.details,
        }


def _stamp(moment: float | None = None) -> str:
    return datetime.fromtimestamp(moment or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def create_app(sim: Simulation, settings: VonageSettings) -> Starlette:
    """The simulator as an ASGI app."""
    pem = settings.private_key_pem()
    if pem is None or settings.signature_secret is None:
        raise ValueError("the Vonage simulator needs the application's key and the signature secret")
    private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("the Vonage application key must be an RSA key")
    public_key = private_key.public_key()
    secret = settings.signature_secret.get_secret_value()
    calls: dict[str, _Call] = {}
    client = httpx.AsyncClient(timeout=5.0)

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        try:
            claims = jwt.decode(
                header.removeprefix("Bearer "),
                public_key,
                algorithms=["RS256"],
                options={"require": ["application_id", "iat", "jti"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims["application_id"] == settings.application_id)

    def unauthorised() -> JSONResponse:
        return _problem(401, "unauthorized", "Unauthorized", "You did not provide correct credentials.")

    async def callback(call: _Call, url: str, method: str, payload: dict[str, Any]) -> httpx.Response | None:
        body = json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {sign_webhook(body, secret=secret, api_key=settings.api_key)}"}
        if method == "GET":
            request = client.build_request("GET", url, params=payload, headers=headers)
        else:
            headers["Content-Type"] = "application/json"
            request = client.build_request("POST", url, content=body, headers=headers)
        return await sim.deliver(client, request)

    async def event(call: _Call, status: str, **extra: Any) -> None:
        call.status = status if status not in ("human", "machine") else call.status
        key = "call_uuid" if status in ("human", "machine") else "uuid"
        payload = {
            "from": call.caller,
            "to": call.to,
            key: call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": "outbound",
            "timestamp": _stamp(),
            **extra,
        }
        await callback(call, call.body["event_url"][0], call.body.get("event_method", "POST"), payload)

    async def play(call: _Call, ncco: list[dict[str, Any]], depth: int = 0) -> None:
        """Run NCCO actions; an input webhook's reply replaces what is left."""
        for action in ncco:
            kind = action.get("action")
            if kind == "talk":
                await sim.pause(min(len(action["text"]) / 15, 20))
            elif kind == "stream":
                await sim.pause(call.script.talk_seconds)
            elif kind == "input" and call.script.behaviour == "answered":
                dtmf = action.get("dtmf", {})
                digits = call.script.digits
                await sim.pause(2.0 if digits else float(dtmf.get("timeOut", 3)))
                payload = {
                    "dtmf": {"digits": digits or "", "timed_out": digits is None},
                    "from": call.caller,
                    "to": call.to,
                    "uuid": call.uuid,
                    "conversation_uuid": call.conversation_uuid,
                    "timestamp": _stamp(),
                }
                method = action.get("eventMethod", "POST")
                response = await callback(call, action["eventUrl"][0], method, payload)
                reply = _ncco_reply(response)
                if reply and depth < 10:
                    await play(call, reply, depth + 1)
                return

    async def run(call: _Call) -> None:
        async def emit(stage: str, *, duration: int = 0, answered_at: float = 0.0) -> None:
            if stage == "completed":
                call.details = {
                    "rate": "0.01200000",
                    "price": f"{0.012 * duration / 60:.8f}",
                    "duration": str(duration),
                    "start_time": _stamp(answered_at),
                    "end_time": _stamp(),
                    "network": "310260",
                }
                await event(call, "completed", **call.details)
            else:
                await event(call, "timeout" if stage == "no_answer" else stage)

        await sim.run_call(
            call.script,
            ring_timeout=float(call.body.get("ringing_timer", 60)),
            emit=emit,
            conversation=lambda: play(call, call.body.get("ncco", [])),
        )

    async def create_call(request: Request) -> JSONResponse:
        if not authorised(request):
            return unauthorised()
        if (interference := await sim.interfere()) is not None:
            return interference
        if not sim.admit():
            return _problem(
                429, "throttled", "Too Many Requests", "You have exceeded the call creation rate."
            )
        try:
            body = await request.json()
        except ValueError:
            return _invalid("body", "is not valid JSON")
        if problem := validate_create(body):
            return _invalid(*problem)
        call_id = str(uuid.uuid4())
        to = body["to"][0]["number"]
        call = _Call(
            uuid=call_id,
            conversation_uuid=f"CON-{uuid.uuid4()}",
            to=to,
            caller=body.get("from", {}).get("number", "random"),
            body=body,
            script=sim.place(to, call_id),
        )
        calls[call_id] = call
        sim.spawn(run(call))
        return JSONResponse(
            {
                "uuid": call_id,
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": call.conversation_uuid,
            },
            status_code=201,
        )

    async def get_call(request: Request) -> JSONResponse:
        if not authorised(request):
            return unauthorised()
        call = calls.get(request.path_params["uuid"])
        if call is None:
            return _problem(404, "not-found", "Not Found", "No call with that UUID.")
        return JSONResponse(call.resource())

    return Starlette(
        routes=[
            Route("/v1/calls", create_call, methods=["POST"]),
            Route("/v1/calls/", create_call, methods=["POST"]),
            Route("/v1/calls/{uuid}", get_call, methods=["GET"]),
            *sim.routes(),
        ],
        lifespan=sim.lifespan(client),
    )


def _ncco_reply(response: httpx.Response | None) -> list[dict[str, Any]] | None:
    if response is None or not response.content:
        return None
    try:
        reply = response.json()
    except ValueError:
        return None
    return reply if isinstance(reply, list) else None
