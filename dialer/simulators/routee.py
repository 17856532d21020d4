"""A Routee stand-in: the OAuth2 token endpoint, voice conversations, their callbacks and tracking.

Written from docs.routee.net (perform-a-voice-conversation, dialplan-verbs, collect-verb, the IVR
and PIN guides, voice-conversation-callbacks, voice-messaging-statuses, the tracking references),
not from our adapter. How a dial plan runs, as those pages describe it:

- Verbs run in order; the call ends after the last one.
- COLLECT does not wait: placed anywhere in the dial plan, it says where the call's DTMF tones go
  (``eventUrl``), how many are kept (``maxDigits``, 30 by default) and whether ``#`` sends them
  (``submitOnHash``). Tones are posted when ``#`` is pressed with ``submitOnHash``, when the first
  tone interrupts a SAY or PLAY with ``bargeIn`` (every tone collected so far, that one included),
  and when the call ends. Each post carries the tones since the previous one, or every tone of the
  call so far: the documents can be read both ways, and ``Simulation.readings["tones"]`` says
  which this simulator follows (``since_last_post``, the default, or ``whole_call``).
- The reply to a COLLECT post, when it is a dial plan, replaces the running one (a reply to the
  post at the end of the call is too late to be played).
- PAUSE waits ``duration`` seconds; a callee's keys during it are collected.
- ``machineDetection``: when a machine answers, ``Hangup`` ends the call and ``Continue`` posts to
  its ``eventUrl``, whose dial plan replaces the running one.
- A callee who declines shows as ``NoAnswer``; ``Unsent`` means the account's balance ran out
  (set ``Simulation.balance`` to the calls the account can still pay for).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer.settings import RouteeSettings
from dialer.simulators.base import CalleeHungUp, Script, Simulation, callback_client, speaking_seconds

DOCUMENTED_LIMIT = 1.0
"""Requests per second: Routee's documented limit, 1 request per second."""

TOKEN_LIFETIME = 3600
TEXT_LIMIT = 1000
"""Characters of TTS text in one call."""
LANGUAGES = frozenset(
    {"en-US", "de-DE", "fr-FR", "it-IT", "pt-BR", "es-ES", "es-LA", "en-GB", "el-GR", "bg-BG", "pl-PL"}
    | {"hu-HU", "sv-SE", "ru-RU"}
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SENDER = re.compile(r"^\+?\d{1,16}$")
_VERBS = {"SAY", "PLAY", "DIAL", "COLLECT", "PAUSE"}
SINCE_LAST_POST, WHOLE_CALL = "since_last_post", "whole_call"
"""The two readings of what a COLLECT post carries (``Simulation.readings["tones"]``): the tones
since the previous post (the default), or, as the dial-plan page's words have it, "all the
collected tones of the call, including the tone that interrupted execution"."""
DETECTION_SECONDS = 3.0
"""How long the machine detector listens before it decides."""
#: Our simulated stages in Routee's status names.
_STATUS = {
    "started": "Initiated",
    "ringing": "Ringing",
    "answered": "InProgress",
    "completed": "Completed",
    "busy": "Busy",
    "no_answer": "NoAnswer",
    "failed": "Failed",
    "rejected": "NoAnswer",  # a callee who declines
}
_FINAL = {"Completed", "Busy", "NoAnswer", "Failed", "Unsent", "Terminated"}


def _error(status: int, number: int, message: str) -> JSONResponse:
    return JSONResponse({"code": f"{status}013{number:03d}", "developerMessage": message}, status_code=status)


def _integer(value: Any, low: int, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _check_verb(verb: Any, index: int) -> str | None:
    where = f"dialPlan.verbs[{index}]"
    if not isinstance(verb, dict) or verb.get("type") not in _VERBS:
        return f"{where}.type must be one of {', '.join(sorted(_VERBS))}"
    kind = verb["type"]
    if kind in ("SAY", "PLAY"):
        if "bargeIn" in verb and not isinstance(verb["bargeIn"], bool):
            return f"{where}.bargeIn must be true or false"
        if "repeat" in verb and not (verb["repeat"] == -1 or _integer(verb["repeat"], 0)):
            return f"{where}.repeat must be 0 or more (-1: forever)"
    if kind == "SAY":
        message = verb.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("text"), str) or not message["text"]:
            return f"{where}.message.text is required"
        if message.get("language") not in LANGUAGES:
            return f"{where}.message.language is not supported"
        if message.get("gender", "female") not in ("male", "female"):
            return f"{where}.message.gender must be male or female"
    elif kind == "PLAY" and not str(verb.get("fileURL", "")).lower().endswith(".wav"):
        return f"{where}.fileURL must be a .wav URL"
    elif kind == "COLLECT":
        if not str(verb.get("eventUrl", "")).startswith(("http://", "https://")):
            return f"{where}.eventUrl is required"
        if "maxDigits" in verb and not _integer(verb["maxDigits"], 1, 30):
            return f"{where}.maxDigits must be 1 to 30"
        if "submitOnHash" in verb and not isinstance(verb["submitOnHash"], bool):
            return f"{where}.submitOnHash must be true or false"
    elif kind == "PAUSE" and not _integer(verb.get("duration"), 1):
        return f"{where}.duration must be a number of seconds"
    elif kind == "DIAL":
        to = verb.get("to")
        if not isinstance(to, dict) or not _E164.match(str(to.get("phone", ""))):
            return f"{where}.to.phone must be a valid phone number in E.164 format"
        if not isinstance(verb.get("from"), str) or not _SENDER.match(verb["from"]):
            return f"{where}.from is required: a numeric sender id of at most 16 characters"
        if "hangupDelay" in verb and not _integer(verb["hangupDelay"], 1, 60):
            return f"{where}.hangupDelay must be between 1 and 60"
        callback = verb.get("callback")
        if callback is not None and (
            not isinstance(callback, dict)
            or callback.get("strategy") not in ("OnChange", "OnCompletion")
            or not str(callback.get("url", "")).startswith(("http://", "https://"))
        ):
            return f"{where}.callback needs a url and a strategy, OnChange or OnCompletion"
    return None


def check_plan(plan: Any) -> str | None:
    """The first problem with a dial plan (``{"verbs": [...]}``), or None."""
    verbs = plan.get("verbs") if isinstance(plan, dict) else None
    if not isinstance(verbs, list) or not verbs:
        return "dialPlan.verbs can not be empty"
    if sum(1 for verb in verbs if isinstance(verb, dict) and verb.get("type") == "DIAL") > 1:
        return "dialPlan can contain one DIAL verb at most"
    for index, verb in enumerate(verbs):
        if problem := _check_verb(verb, index):
            return problem
    spoken = sum(len(verb["message"]["text"]) for verb in verbs if verb["type"] == "SAY")
    if spoken > TEXT_LIMIT:
        return f"dialPlan speaks {spoken} characters; at most {TEXT_LIMIT}"
    return None


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object"
    if not isinstance(body.get("from"), str) or not _SENDER.match(body["from"]):
        return "from is required: a numeric sender id of at most 16 characters"
    to = body.get("to")
    if not isinstance(to, dict) or not _E164.match(str(to.get("phone", ""))):
        return "to.phone must be a valid phone number in E.164 format"
    if ("dialPlan" in body) == ("dialPlanUrl" in body):
        return "Use either dialPlan or dialPlanUrl"
    if "dialPlan" in body and (problem := check_plan(body["dialPlan"])):
        return problem
    if "hangupDelay" in body and not _integer(body["hangupDelay"], 1, 60):
        return "hangupDelay must be between 1 and 60"
    if "maxDuration" in body and not _integer(body["maxDuration"], 1):
        return "maxDuration must be at least 1"
    callback = body.get("callback")
    if callback is not None:
        if not isinstance(callback, dict) or callback.get("strategy") not in ("OnChange", "OnCompletion"):
            return "callback.strategy must be OnChange or OnCompletion"
        if not str(callback.get("url", "")).startswith(("http://", "https://")):
            return "callback.url is required"
    detection = body.get("machineDetection")
    if detection is not None:
        if not isinstance(detection, dict) or detection.get("strategy") not in ("Hangup", "Continue"):
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
    updated: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    details: dict[str, Any] = field(default_factory=dict)
    tones: str = ""
    """Every tone collected in the call, for tracking."""
    answered_by: str | None = None

    def set_status(self, name: str) -> None:
        self.status, self.updated = name, datetime.now(UTC).isoformat()

    def payload(self) -> dict[str, Any]:
        """The status callback's body."""
        return {
            "messageId": self.message_id,
            "conversationTrackingId": self.tracking_id,
            "to": self.body["to"]["phone"],
            "from": self.body["from"],
            "status": {"name": self.status, "updatedDate": self.updated},
            "direction": "Outbound",
            "originatingService": "Voice",
            "respectQuietHours": False,
            **self.details,
        }

    def message(self) -> dict[str, Any]:
        """The tracking view of the conversation's one message."""
        return {
            "messageId": self.message_id,
            "conversationTrackingId": self.tracking_id,
            "to": self.body["to"]["phone"],
            "from": self.body["from"],
            "country": "US" if self.body["to"]["phone"].startswith("+1") else None,
            "status": {"status": self.status, "date": self.updated},
            "originatingService": "Voice",
            "direction": "Outbound",
            "duration": self.details.get("duration", 0),
            "price": self.details.get("price", 0),
            "chargeInterval": 1,
            "collectedTones": self.tones,
            "answeredBy": self.answered_by or "UNKNOWN",
        }


class _Keypad:
    """The callee's finger: once a question is asked, its keys come in real time."""

    def __init__(self, sim: Simulation, script: Script) -> None:
        self._sim, self._script = sim, script
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.questions = 0

    def asked(self, question_seconds: float) -> None:
        """A question starts now: the callee answers it (again, if it was asked before)."""
        self.stop()
        self.questions += 1
        keys = self._script.keys(question_seconds, self.questions)
        self._task = asyncio.get_running_loop().create_task(self._press(keys))

    async def _press(self, keys: list[tuple[float, str]]) -> None:
        then = 0.0
        for moment, key in keys:
            await self._sim.pause(moment - then)
            then = moment
            self.keys.put_nowait(key)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _once(verb: dict[str, Any], script: Script) -> float:
    """How long a SAY or PLAY lasts when it is played once."""
    return speaking_seconds(verb["message"]["text"]) if verb["type"] == "SAY" else script.talk_seconds


def _seconds(verb: dict[str, Any], script: Script) -> float:
    """How long a SAY or PLAY lasts, its repeats included (-1: until the call is cut)."""
    repeat = verb.get("repeat", 0)
    return _once(verb, script) * (1 + repeat) if repeat >= 0 else 3600.0


def create_app(sim: Simulation, settings: RouteeSettings) -> Starlette:
    if settings.application_secret is None:
        raise ValueError("the Routee simulator needs the application id and secret")
    expected = base64.b64encode(
        f"{settings.application_id}:{settings.application_secret.get_secret_value()}".encode()
    ).decode()
    tokens: dict[str, float] = {}
    conversations: dict[str, _Conversation] = {}
    client = callback_client()

    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
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

    async def post(url: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """POST to the application; the dial plan it answered with, if it is a valid one."""
        response = await sim.deliver(client, client.build_request("POST", url, json=payload))
        if response is None or not response.content:
            return None
        try:
            plan = response.json()
        except ValueError:
            return None
        return plan if check_plan(plan) is None else None

    async def run(conversation: _Conversation) -> None:
        body = conversation.body
        callback = body.get("callback") or {}
        keypad = _Keypad(sim, conversation.script)
        collected = {"tones": ""}

        async def send_tones(collector: dict[str, Any]) -> dict[str, Any] | None:
            tones, collected["tones"] = collected["tones"], ""
            if sim.readings.get("tones", SINCE_LAST_POST) == WHOLE_CALL:
                tones = conversation.tones
            payload = {
                "from": body["from"],
                "to": body["to"]["phone"],
                "messageId": conversation.message_id,
                "conversationTrackingId": conversation.tracking_id,
                "collectedTones": tones,
            }
            return await post(collector["eventUrl"], payload)

        async def listen(seconds: float, collector: dict[str, Any] | None, barge: bool) -> tuple[bool, Any]:
            """Spend ``seconds`` of the call taking keys; (cut short, the dial plan that replaces the
            running one)."""
            deadline = time.monotonic() + seconds * sim.time_scale
            while (left := deadline - time.monotonic()) > 0:
                try:
                    key = await asyncio.wait_for(keypad.keys.get(), left)
                except TimeoutError:
                    break
                if collector is None:
                    continue  # no COLLECT in the dial plan: the tones go nowhere
                if key == "#" and collector.get("submitOnHash", False):
                    return True, await send_tones(collector)
                if len(collected["tones"]) < collector.get("maxDigits", 30):
                    collected["tones"] += key
                    conversation.tones += key
                if barge:
                    return True, await send_tones(collector)
            return False, None

        async def dial(verb: dict[str, Any]) -> None:
            """Bridge the call to the DIAL's number: its own message, reported to the verb's
            callback like any other (Initiated, Ringing, then InProgress and Completed, or Busy or
            NoAnswer after ``hangupDelay``). The call is over when an answered leg hangs up."""
            message_id = str(uuid.uuid4())
            number = verb["to"]["phone"]
            script = sim.transfer(number, message_id)
            url = (verb.get("callback") or {}).get("url")

            async def status(name: str, **details: Any) -> None:
                if url:
                    payload = conversation.payload() | {
                        "messageId": message_id,
                        "to": number,
                        "from": verb.get("from", body["from"]),
                        "status": {"name": name, "updatedDate": datetime.now(UTC).isoformat()},
                        **details,
                    }
                    await sim.deliver(client, client.build_request("POST", url, json=payload))

            await status("Initiated")
            await sim.pause(1.0)
            await status("Ringing")
            ring = float(verb.get("hangupDelay", 20))
            if script.behaviour in ("busy", "failed"):
                await sim.pause(min(script.ring_seconds, ring))
                await status("Busy" if script.behaviour == "busy" else "Failed")
                return
            if script.behaviour in ("no_answer", "rejected") or script.ring_seconds >= ring:
                await sim.pause(ring)
                await status("NoAnswer")
                return
            await sim.pause(script.ring_seconds)
            await status("InProgress")
            await sim.pause(script.talk_seconds)
            seconds = max(1, round(script.talk_seconds))
            await status("Completed", duration=seconds, price=round(0.015 * seconds / 60, 5))
            raise CalleeHungUp  # the bridged call is over

        async def execute(plan: dict[str, Any]) -> None:
            while True:
                verbs = plan["verbs"]
                collector = next((verb for verb in verbs if verb["type"] == "COLLECT"), None)
                spoken = [verb for verb in verbs if verb["type"] in ("SAY", "PLAY")]
                # The callee takes the first prompt that may be interrupted for the question (it
                # may be said again after it), else the last thing said before the collector.
                barge = [verb for verb in spoken if verb.get("bargeIn")]
                asked = barge or spoken[-1:]
                question: dict[str, Any] | None = asked[0] if collector is not None and asked else None
                replacement = None
                for verb in verbs:
                    kind = verb["type"]
                    if kind in ("SAY", "PLAY"):
                        seconds = _seconds(verb, conversation.script)
                        if question is not None and verb is question:
                            keypad.asked(_once(question, conversation.script))
                            if conversation.script.hangs_up(keypad.questions):
                                await sim.pause(seconds / 2)
                                raise CalleeHungUp
                        _, replacement = await listen(seconds, collector, bool(verb.get("bargeIn")))
                    elif kind == "PAUSE":
                        _, replacement = await listen(float(verb["duration"]), collector, False)
                    elif kind == "DIAL":
                        await dial(verb)
                    if replacement is not None:
                        break
                if replacement is None:
                    if collector is not None and collected["tones"]:
                        await send_tones(collector)  # the call is over: too late for a reply
                    return
                plan = replacement

        async def after_answer() -> None:
            plan = body.get("dialPlan") or {"verbs": []}
            detection = body.get("machineDetection")
            if conversation.script.behaviour != "machine" or detection is None:
                conversation.answered_by = (
                    "HUMAN" if conversation.script.behaviour != "machine" else "UNKNOWN"
                )
                await execute(plan)
                return
            conversation.answered_by = "MACHINE"
            runner = asyncio.get_running_loop().create_task(execute(plan))
            await sim.pause(DETECTION_SECONDS)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            if detection["strategy"] == "Continue":
                payload = {
                    "conversationTrackingId": conversation.tracking_id,
                    "messageId": conversation.message_id,
                    "to": body["to"]["phone"],
                    "from": body["from"],
                    "answeredBy": "MACHINE",
                }
                if (replacement := await post(detection["eventUrl"], payload)) is not None:
                    await execute(replacement)

        async def conversation_with_limit() -> None:
            limit = float(body.get("maxDuration", 7200)) * sim.time_scale
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(after_answer(), limit)
            finally:
                keypad.stop()

        async def tell() -> None:
            final = conversation.status in _FINAL
            if callback.get("url") and (callback.get("strategy") == "OnChange" or final):
                await sim.deliver(
                    client, client.build_request("POST", callback["url"], json=conversation.payload())
                )

        async def emit(stage: str, *, duration: int = 0, **_: Any) -> None:
            conversation.set_status(_STATUS[stage])
            if stage == "completed":
                conversation.details = {"duration": duration, "price": round(0.015 * duration / 60, 5)}
            await tell()

        if sim.balance is not None and sim.balance <= 0:
            await sim.pause(0.3)
            conversation.set_status("Unsent")  # the account cannot pay for the call
            await tell()
            return
        if sim.balance is not None:
            sim.balance -= 1
        await sim.run_call(
            conversation.script,
            ring_timeout=float(body.get("hangupDelay", 20)),
            emit=emit,
            conversation=conversation_with_limit,
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

    async def message_tracking(request: Request) -> JSONResponse:
        """``GET /voice/tracking/{messageId}``: one message."""
        if not authorised(request):
            return _error(401, 1, "Invalid or expired access token")
        found = [c for c in conversations.values() if c.message_id == request.path_params["message_id"]]
        if not found:
            return _error(404, 1, "No voice message with that id")
        return JSONResponse(found[0].message())

    async def conversation_tracking(request: Request) -> JSONResponse:
        """``GET /voice/tracking/conversation/{conversationTrackingId}``: a page of its messages."""
        if not authorised(request):
            return _error(401, 1, "Invalid or expired access token")
        conversation = conversations.get(request.path_params["tracking_id"])
        if conversation is None:
            return _error(404, 1, "No conversation with that trackingId")
        size_text = request.query_params.get("size", "20")
        size = int(size_text) if size_text.isdigit() and int(size_text) > 0 else 20
        messages = [conversation.message()]
        return JSONResponse(
            {
                "content": messages,
                "totalPages": max(1, math.ceil(len(messages) / size)),
                "totalElements": len(messages),
                "last": True,
                "first": True,
                "numberOfElements": len(messages),
                "size": size,
                "number": 0,
            }
        )

    return Starlette(
        routes=[
            Route("/oauth/token", token, methods=["POST"]),
            Route("/voice/conversation", create, methods=["POST"]),
            Route("/voice/tracking/conversation/{tracking_id}", conversation_tracking, methods=["GET"]),
            Route("/voice/tracking/{message_id}", message_tracking, methods=["GET"]),
            *sim.routes(),
        ],
        lifespan=sim.lifespan(client),
    )
