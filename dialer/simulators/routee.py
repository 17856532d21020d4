"""A Routee stand-in: the OAuth2 token endpoint and voice conversations with their callbacks.

A callee who declines is reported as ``Unsent`` (Routee has no "rejected" status).
"""

from __future__ import annotations

import base64
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer.settings import RouteeSettings
from dialer.simulators.base import Script, Simulation

DOCUMENTED_LIMIT = 1.0
"""Requests per second: Routee's documented limit: 1 request per second."""

TOKEN_LIFETIME = 3600
LANGUAGES = frozenset(
    {
        "en-US",
        "en-GB",
        "de-DE",
        "fr-FR",
        "it-IT",
        "pt-BR",
        "es-ES",
        "el-GR",
        "bg-BG",
        "pl-PL",
        "hu-HU",
        "sv-SE",
    }
    | {"ru-RU"}
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_VERBS = {"SAY", "PLAY", "DIAL", "COLLECT", "PAUSE"}
#: Our simulated stages in Routee's status names.
_STATUS = {
    "started": "Initiated",
    "ringing": "Ringing",
    "answered": "InProgress",
    "completed": "Completed",
    "busy": "Busy",
    "no_answer": "NoAnswer",
    "failed": "Failed",
    "rejected": "Unsent",
}


def _error(status: int, number: int, message: str) -> JSONResponse:
    return JSONResponse({"code": f"{status}013{number:03d}", "developerMessage": message}, status_code=status)


def _check_verb(verb: Any, index: int) -> str | None:
    where = f"dialPlan.verbs[{index}]"
    if not isinstance(verb, dict) or verb.get("type") not in _VERBS:
        return f"{where}.type must be one of {', '.join(sorted(_VERBS))}"
    kind = verb["type"]
    if kind == "SAY":
        message = verb.get("message") or {}
        if not message.get("text"):
            return f"{where}.message.text is required"
        if message.get("language") not in LANGUAGES:
            return f"{where}.message.language is not supported"
        if message.get("gender", "female") not in ("male", "female"):
            return f"{where}.message.gender must be male or female"
    elif kind == "PLAY" and not str(verb.get("fileURL", "")).lower().endswith(".wav"):
        return f"{where}.fileURL must be a .wav URL"
    elif kind == "COLLECT":
        if not str(verb.get("eventUrl", "")).startswith("http"):
            return f"{where}.eventUrl is required"
        if not 1 <= int(verb.get("maxDigits", 30)) <= 30:
            return f"{where}.maxDigits must be 1 to 30"
    return None


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object"
    if not body.get("from"):
        return "from is required"
    to = body.get("to")
    if not isinstance(to, dict) or not _E164.match(str(to.get("phone", ""))):
        return "to.phone must be a valid phone number in E.164 format"
    if ("dialPlan" in body) == ("dialPlanUrl" in body):
        return "Use either dialPlan or dialPlanUrl"
    verbs = (body.get("dialPlan") or {}).get("verbs") if "dialPlan" in body else None
    if "dialPlan" in body:
        if not isinstance(verbs, list) or not verbs:
            return "dialPlan.verbs can not be empty"
        if sum(1 for verb in verbs if isinstance(verb, dict) and verb.get("type") == "DIAL") > 1:
            return "dialPlan can contain one DIAL verb at most"
        for index, verb in enumerate(verbs):
            if problem := _check_verb(verb, index):
                return problem
    if not 1 <= int(body.get("hangupDelay", 20)) <= 60:
        return "hangupDelay must be between 1 and 60"
    if "maxDuration" in body and int(body["maxDuration"]) < 1:
        return "maxDuration must be at least 1"
    callback = body.get("callback")
    if callback is not None and callback.get("strategy") not in ("OnChange", "OnCompletion"):
        return "callback.strategy must be OnChange or OnCompletion"
    detection = body.get("machineDetection")
    if detection is not None:
        if detection.get("strategy") not in ("Hangup", "Continue"):
            return "machineDetection.strategy must be Hangup or Continue"
        if detection["strategy"] == "Continue" and not detection.get("eventUrl"):
            return "machineDetection.eventUrl is required with the Continue strategy"
    return None


@dataclass
class _Conversation:
    tracking_id: str
    message_id: str
    body: dict[str, Any]
    script: Script
    status: str = "Queued"
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "conversationTrackingId": self.tracking_id,
            "to": self.body["to"]["phone"],
            "from": self.body["from"],
            "status": {"name": self.status, "updatedDate": datetime.now(UTC).isoformat()},
            "direction": "Outbound",
            "originatingService": "Voice",
            "respectQuietHours": False,
            **self.details,
        }


def create_app(sim: Simulation, settings: RouteeSettings) -> Starlette:
    if settings.application_secret is None:
        raise ValueError("the Routee simulator needs the application id and secret")
    expected = base64.b64encode(
        f"{settings.application_id}:{settings.application_secret.get_secret_value()}".encode()
    ).decode()
    tokens: dict[str, float] = {}
    conversations: dict[str, _Conversation] = {}
    client = httpx.AsyncClient(timeout=5.0)

    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse(
                {"error": "unauthorized", "error_description": "Bad credentials"}, status_code=401
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        value = secrets.token_urlsafe(32)
        tokens[value] = time.monotonic() + TOKEN_LIFETIME
        return JSONResponse(
            {
                "access_token": value,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "scope": "voice",
                "permissions": ["MT_ROLE_VOICE"],
            }
        )

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return tokens.get(header.removeprefix("Bearer "), 0) > time.monotonic()

    async def post(url: str, payload: dict[str, Any]) -> httpx.Response | None:
        return await sim.deliver(client, client.build_request("POST", url, json=payload))

    async def run(conversation: _Conversation) -> None:
        body = conversation.body
        callback = body.get("callback") or {}

        async def play(verbs: list[dict[str, Any]], depth: int = 0) -> None:
            for verb in verbs:
                if verb["type"] == "SAY":
                    await sim.pause(min(len(verb["message"]["text"]) / 15, 20))
                elif verb["type"] == "PLAY":
                    await sim.pause(conversation.script.talk_seconds)
                elif verb["type"] == "COLLECT" and conversation.script.behaviour == "answered":
                    await sim.pause(2.0 if conversation.script.digits else 5.0)
                    payload = {
                        "from": body["from"],
                        "to": body["to"]["phone"],
                        "messageId": conversation.message_id,
                        "conversationTrackingId": conversation.tracking_id,
                        "collectedTones": conversation.script.digits or "",
                    }
                    reply = await post(verb["eventUrl"], payload)
                    plan = reply.json() if reply is not None and reply.content else None
                    if isinstance(plan, dict) and plan.get("verbs") and depth < 10:
                        await play(plan["verbs"], depth + 1)
                    return

        async def conversation_after_answer() -> None:
            if conversation.script.behaviour == "machine":
                detection = body.get("machineDetection") or {}
                if detection.get("strategy") == "Continue":
                    payload = {
                        "conversationTrackingId": conversation.tracking_id,
                        "messageId": conversation.message_id,
                        "to": body["to"]["phone"],
                        "from": body["from"],
                        "answeredBy": "MACHINE",
                    }
                    reply = await post(detection["eventUrl"], payload)
                    plan = reply.json() if reply is not None and reply.content else None
                    if isinstance(plan, dict) and plan.get("verbs"):
                        await play(plan["verbs"])
                return
            await play((body.get("dialPlan") or {}).get("verbs", []))

        async def emit(stage: str, *, duration: int = 0, **_: Any) -> None:
            if stage == "machine":
                return  # reported to machineDetection.eventUrl by the conversation
            conversation.status = _STATUS[stage]
            if stage == "completed":
                conversation.details = {"duration": duration, "price": round(0.015 * duration / 60, 5)}
            final = stage in ("completed", "busy", "no_answer", "failed", "rejected")
            if callback.get("url") and (callback.get("strategy") == "OnChange" or final):
                await post(callback["url"], conversation.payload())

        await sim.run_call(
            conversation.script,
            ring_timeout=float(body.get("hangupDelay", 20)),
            emit=emit,
            conversation=conversation_after_answer,
        )

    async def create(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, 1, "Invalid or expired access token")
        if (interference := await sim.interfere()) is not None:
            return interference
        if not sim.admit():
            return _error(429, 1, f"Too many requests: the limit is {sim.rate_limit:g} request(s) per second")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 1, "The body is not valid JSON")
        if problem := validate(body):
            return _error(400, 2, problem)
        tracking_id = str(uuid.uuid4())
        conversation = _Conversation(
            tracking_id=tracking_id,
            message_id=str(uuid.uuid4()),
            body=body,
            script=sim.place(body["to"]["phone"], tracking_id),
        )
        conversations[tracking_id] = conversation
        sim.spawn(run(conversation))
        answer = {
            key: body[key]
            for key in ("from", "to", "dialPlan", "callback", "maxDuration", "machineDetection")
            if key in body
        }
        return JSONResponse(
            {
                "trackingId": tracking_id,
                "direction": "Outbound",
                "hangupDelay": body.get("hangupDelay", 20),
                "createdAt": datetime.now(UTC).isoformat(),
                **answer,
            }
        )

    async def tracking(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, 1, "Invalid or expired access token")
        conversation = conversations.get(request.path_params["tracking_id"])
        if conversation is None:
            return _error(404, 1, "No conversation with that trackingId")
        return JSONResponse(conversation.payload())

    return Starlette(
        routes=[
            Route("/oauth/token", token, methods=["POST"]),
            Route("/voice/conversation", create, methods=["POST"]),
            Route("/voice/tracking/{tracking_id}", tracking, methods=["GET"]),
            *sim.routes(),
        ],
        lifespan=sim.lifespan(client),
    )
