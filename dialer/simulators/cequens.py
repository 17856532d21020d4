"""A Cequens stand-in: sign-in for a bearer JWT, calls with user input, status and DTMF callbacks.

Cequens's public pages give the call's fields but not its path, its answer, nor its callbacks'
fields. The simulator chooses them for itself, not from our settings (``Simulation.readings``:
``call_path``, ``call_id_field`` (a dotted path in the answer), ``callback_id_field``,
``status_field``, ``digits_field``; by default those we guessed first), so a wrong guess fails.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer.settings import CequensSettings
from dialer.simulators.base import Script, Simulation, callback_client

DOCUMENTED_LIMIT = 10.0
"""Requests per second: not published by Cequens; taken as 10 calls per second."""

TOKEN_LIFETIME = 3600
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_STATUS = {
    "started": "initiated",
    "ringing": "ringing",
    "answered": "answered",
    "completed": "completed",
    "busy": "busy",
    "no_answer": "no-answer",
    "failed": "failed",
    "rejected": "rejected",
}


SHAPE = {
    "call_path": "/voice/v1/calls",
    "call_id_field": "data.callId",
    "callback_id_field": "callId",
    "status_field": "status",
    "digits_field": "digits",
}
"""What the simulator's Cequens answers and calls back with, unless ``Simulation.readings`` say
otherwise: the first of our adapter's guesses (see the module's docstring)."""


def _envelope(data: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    return {
        "replyCode": 0,
        "replyMessage": "Success",
        "requestId": request_id or str(uuid.uuid4()),
        "clientRequestId": None,
        "requestTime": datetime.now(UTC).isoformat(),
        "data": data,
    }


def _error(status: int, description: str, code: int) -> JSONResponse:
    body = {
        "error": {
            "status": status,
            "description": description,
            "internalErrors": [{"code": code, "details": description}],
        }
    }
    return JSONResponse(body, status_code=status)


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object"
    if not _E164.match(str(body.get("recipient", ""))):
        return "recipient is required in E.164 format"
    say = body.get("sayText")
    if not isinstance(say, str) or (not say and not body.get("audioUrl")):
        return "sayText is required"
    for name in ("neural", "collectInput"):
        if name in body and not isinstance(body[name], bool):
            return f"{name} must be a boolean"
    if not (isinstance(body.get("repeat", 2), int) and 1 <= body.get("repeat", 2) <= 10):
        return "repeat must be between 1 and 10"
    if not (isinstance(body.get("timeout", 30), int) and 1 <= body.get("timeout", 30) <= 120):
        return "timeout must be between 1 and 120 seconds"
    for name in ("audioUrl", "dtmfCallbackEndpoint", "statusCallbackEndpoint"):
        if name in body and not str(body[name]).startswith(("http://", "https://")):
            return f"{name} must be an http(s) URL"
    if body.get("collectInput") and not body.get("dtmfCallbackEndpoint"):
        return "dtmfCallbackEndpoint is required when collectInput is true"
    if "metaData" in body and not isinstance(body["metaData"], dict):
        return "metaData must be a JSON object"
    return None


def create_app(sim: Simulation, settings: CequensSettings) -> Starlette:
    if settings.api_key is None:
        raise ValueError("the Cequens simulator needs the API key and user name")
    signing_key = secrets.token_bytes(32)
    client = callback_client()

    async def sign_in(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The body must be JSON", 1000)
        assert settings.api_key is not None
        if (
            body.get("apiKey") != settings.api_key.get_secret_value()
            or body.get("userName") != settings.user_name
        ):
            return _error(401, "Invalid API key or user name", 1001)
        now = int(time.time())
        token = jwt.encode(
            {"sub": settings.user_name, "iat": now, "exp": now + TOKEN_LIFETIME}, signing_key, "HS256"
        )
        return JSONResponse(_envelope({"access_token": token}))

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        try:
            jwt.decode(header.removeprefix("Bearer "), signing_key, algorithms=["HS256"])
        except jwt.PyJWTError:
            return False
        return header.startswith("Bearer ")

    shape = SHAPE | sim.readings

    async def run(body: dict[str, Any], call_id: str, script: Script) -> None:
        async def conversation() -> None:
            await sim.pause(min(len(body.get("sayText", "")) / 15, 20) * body.get("repeat", 2))
            if body.get("collectInput") and script.behaviour == "answered":
                query = {shape["callback_id_field"]: call_id, shape["digits_field"]: script.answer(1) or ""}
                await sim.deliver(
                    client, client.build_request("GET", body["dtmfCallbackEndpoint"], params=query)
                )

        async def emit(stage: str, *, duration: int = 0, **_: Any) -> None:
            if stage == "machine" or "statusCallbackEndpoint" not in body:
                return  # Cequens does not detect answering machines
            payload: dict[str, Any] = {
                shape["callback_id_field"]: call_id,
                shape["status_field"]: _STATUS[stage],
                "timestamp": datetime.now(UTC).isoformat(),
                "metaData": body.get("metaData"),
            }
            if stage == "completed":
                payload["duration"] = duration
            await sim.deliver(
                client, client.build_request("POST", body["statusCallbackEndpoint"], json=payload)
            )

        await sim.run_call(
            script, ring_timeout=float(body.get("timeout", 30)), emit=emit, conversation=conversation
        )

    async def call(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "Unauthorized: sign in for a token", 1002)
        if (interference := await sim.interfere()) is not None:
            return interference
        if not sim.admit():
            return _error(429, "Too many requests", 1003)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The body must be JSON", 1000)
        if problem := validate(body):
            return _error(400, problem, 1004)
        call_id = str(uuid.uuid4())
        sim.spawn(run(body, call_id, sim.place(body["recipient"], call_id)))
        *outer, last = shape["call_id_field"].split(".")
        answer: dict[str, Any] = {last: call_id}
        for key in reversed(outer):
            answer = {key: answer}
        envelope = _envelope(answer.pop("data", {})) | answer
        return JSONResponse(envelope)

    return Starlette(
        routes=[
            Route("/auth/v1/tokens/", sign_in, methods=["POST"]),
            Route("/auth/v1/tokens", sign_in, methods=["POST"]),
            Route(shape["call_path"], call, methods=["POST"]),
            *sim.routes(),
        ],
        lifespan=sim.lifespan(client),
    )
