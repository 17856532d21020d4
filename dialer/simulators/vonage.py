"""A Vonage Voice API v1 stand-in, written from the API reference (not from our adapter).

Every call operation of the reference is served, with its documented bodies: create, list (with
its filters and HAL paging), get (times as ``YYYY-MM-DD HH:MM:SS``), modify (transfer, hangup,
mute, unmute, earmuff, unearmuff), play and stop audio and TTS, send DTMF, and subscribe to and
unsubscribe from DTMF input. Each request needs an application JWT signed RS256 with the
application's key; bodies are checked field by field, and a bad one is answered 400 with
``invalid_parameters`` naming it. Calls run their NCCO (every action of the NCCO reference:
talk, stream, input, record, connect, conversation, notify, and the SDK's wait and transfer), or
the NCCO their ``answer_url``
returns; a transfer replaces the running NCCO, a hangup ends the call.

Callbacks go to ``event_url`` and each ``input``'s ``eventUrl``. They are signed (an HS256 JWT
with the body's ``payload_hash``, claim ``api_key``) when the application signs callbacks, which
here means when the settings carry a signature secret; without one they arrive unsigned, as an
application with signing off sends them.

How the input action collects keys, as documented: keys pressed while a ``bargeIn`` prompt plays
interrupt it; input ends after ``maxDigits`` keys, on ``#`` with ``submitOnHash``, or ``timeOut``
seconds after the last key (``timed_out`` true), and the event's reply replaces the NCCO. Machine
detection: ``machine_detection`` sends ``machine`` (and hangs up with ``hangup``);
``advanced_machine_detection`` sends ``human`` or ``machine`` and, in ``detect_beep`` and
``default`` modes, ``machine`` with ``sub_state`` ``beep_start`` (or ``beep_timeout``); in the
asynchronous ``default`` mode the NCCO runs meanwhile and a reply to those events replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.settings import VonageSettings
from dialer.simulators.base import (
    BEEP_SECONDS,
    CalleeHungUp,
    Script,
    Simulation,
    callback_client,
    speaking_seconds,
)

DOCUMENTED_LIMIT = 3.0
"""Requests per second: Vonage's documented default, 3 calls per second (429 beyond)."""

log = logging.getLogger("dialer.simulator.vonage")

_ERRORS = "https://developer.nexmo.com/api-errors"
_E164 = re.compile(r"^\d{7,15}$")
_DTMF = re.compile(r"^[0-9#*p]*$")
_URL = re.compile(r"^https?://\S+$")
LANGUAGES = frozenset(
    "ar bn-IN ca-ES cmn-CN cmn-TW cs-CZ cy-GB da-DK de-DE el-GR en-AU en-GB en-GB-WLS en-IN en-US "  # noqa: SIM905
    "en-ZA es-ES es-MX es-US eu-ES fi-FI fil-PH fr-CA fr-FR he-IL hi-IN hu-HU id-ID is-IS it-IT "
    "ja-JP ko-KR ml-IN nb-NO nl-NL no-NO pl-PL pt-BR pt-PT ro-RO ru-RU sk-SK sv-SE ta-IN te-IN "
    "th-TH tr-TR uk-UA vi-VN yue-CN".split()
)
_FINAL = frozenset({"completed", "busy", "cancelled", "failed", "rejected", "timeout", "unanswered"})
STATUSES = _FINAL | {"started", "ringing", "answered", "machine"}
_MODIFY = frozenset({"transfer", "hangup", "mute", "unmute", "earmuff", "unearmuff"})


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


# -- answers ----------------------------------------------------------------------------------------


def _problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"{_ERRORS}#{kind}", "title": title, "detail": detail, "instance": uuid.uuid4().hex}
    return JSONResponse(body | extra, status_code=status)


def _invalid(name: str, reason: str) -> JSONResponse:
    return _problem(
        400,
        "validation",
        "Bad Request",
        "The request failed due to validation errors",
        invalid_parameters=[{"name": name, "reason": reason}],
    )


def _not_found(call_id: str) -> JSONResponse:
    return _problem(
        404, "not-found", "Not Found", f"ID '{call_id}' does not exist, or you do not have access"
    )


def _message(text: str, call_id: str) -> JSONResponse:
    return JSONResponse({"message": text, "uuid": call_id})


# -- validation -------------------------------------------------------------------------------------


class Invalid(Exception):
    """A request field the reference does not allow: ``name`` and why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(name, "must be an object")
    return value


def _integer(value: Any, name: str, low: float, high: float) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(name, f"must be an integer from {low:g} to {high:g}")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise Invalid(name, f"must be a number from {low:g} to {high:g}")
    return number


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(name, "must be true or false")
    return value


def _choice(value: Any, name: str, allowed: frozenset[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(name, f"must be one of {', '.join(sorted(allowed))}")
    return str(value)


def _string(value: Any, name: str, *, most: int | None = None, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (most is not None and len(value) > most):
        raise Invalid(name, "must be a string" + (f" of at most {most} characters" if most else ""))
    if pattern is not None and not pattern.match(value):
        raise Invalid(name, f"must match {pattern.pattern}")
    return value


def _urls(value: Any, name: str, *, one: bool = True) -> list[str]:
    if not isinstance(value, list) or not value or (one and len(value) != 1):
        raise Invalid(name, "must be an array with one URL" if one else "must be an array of URLs")
    for index, url in enumerate(value):
        _string(url, f"{name}[{index}]", pattern=_URL)
    return value


def _optional(
    body: dict[str, Any], key: str, check: Any, *args: Any, prefix: str = "", **options: Any
) -> None:
    """``check`` the field ``key`` when the body has it."""
    if key in body:
        check(body[key], f"{prefix}{key}", *args, **options)


def check_endpoint(value: Any, name: str, *, caller: bool = False) -> dict[str, Any]:
    """A ``to`` or ``from`` endpoint (or a connect action's), by its type."""
    endpoint = _object(value, name)
    kind = endpoint.get("type")
    if caller:
        _choice(kind, f"{name}.type", ("phone",))
    if kind == "phone":
        number = endpoint.get("number")
        if not (isinstance(number, str) and (_E164.match(number) or (caller and number.startswith("sip:")))):
            raise Invalid(f"{name}.number", "must be 7 to 15 digits (E.164 without the +)")
        _optional(endpoint, "dtmfAnswer", _string, prefix=f"{name}.", pattern=_DTMF)
        _optional(endpoint, "shaken", _string, prefix=f"{name}.")
    elif kind == "sip":
        _string(endpoint.get("uri"), f"{name}.uri", pattern=re.compile(r"^sips?:"))
    elif kind == "websocket":
        _string(endpoint.get("uri"), f"{name}.uri", pattern=re.compile(r"^wss?://"))
        _string(endpoint.get("content-type"), f"{name}.content-type")
    elif kind == "vbc":
        _string(endpoint.get("extension"), f"{name}.extension")
    elif kind == "app":
        _string(endpoint.get("user"), f"{name}.user")
    else:
        raise Invalid(f"{name}.type", "must be one of app, phone, sip, vbc, websocket")
    return endpoint


def _check_event_target(action: dict[str, Any], where: str, *, required: bool = False) -> None:
    if required or "eventUrl" in action:
        _urls(action.get("eventUrl"), f"{where}.eventUrl")
    _optional(action, "eventMethod", _choice, ("GET", "POST"), prefix=f"{where}.")


def _check_talk(action: dict[str, Any], where: str) -> None:
    _string(action.get("text"), f"{where}.text", most=1500)
    _optional(action, "bargeIn", _boolean, prefix=f"{where}.")
    _optional(action, "loop", _integer, 0, 1000, prefix=f"{where}.")
    _optional(action, "level", _number, -1, 1, prefix=f"{where}.")
    _optional(action, "language", _choice, LANGUAGES, prefix=f"{where}.")
    _optional(action, "style", _integer, 0, 100, prefix=f"{where}.")
    _optional(action, "premium", _boolean, prefix=f"{where}.")
    _optional(action, "voiceName", _string, prefix=f"{where}.")


def _check_stream(action: dict[str, Any], where: str) -> None:
    _urls(action.get("streamUrl"), f"{where}.streamUrl")
    _optional(action, "level", _number, -1, 1, prefix=f"{where}.")
    _optional(action, "bargeIn", _boolean, prefix=f"{where}.")
    _optional(action, "loop", _integer, 0, 1000, prefix=f"{where}.")


def _check_input(action: dict[str, Any], where: str) -> None:
    kinds = action.get("type", ["dtmf"])
    if not isinstance(kinds, list) or not kinds or not all(kind in ("dtmf", "speech") for kind in kinds):
        raise Invalid(f"{where}.type", "must be an array of dtmf and/or speech")
    dtmf = _object(action.get("dtmf", {}), f"{where}.dtmf")
    _optional(dtmf, "timeOut", _integer, 0, 10, prefix=f"{where}.dtmf.")
    _optional(dtmf, "maxDigits", _integer, 1, 20, prefix=f"{where}.dtmf.")
    _optional(dtmf, "submitOnHash", _boolean, prefix=f"{where}.dtmf.")
    # The NCCO schema's older form keeps the same three at the top of the action.
    _optional(action, "timeOut", _integer, 0, 10, prefix=f"{where}.")
    _optional(action, "maxDigits", _integer, 1, 20, prefix=f"{where}.")
    _optional(action, "submitOnHash", _boolean, prefix=f"{where}.")
    _optional(action, "speech", _object, prefix=f"{where}.")
    _optional(action, "mode", _choice, ("synchronous", "asynchronous"), prefix=f"{where}.")
    _check_event_target(action, where)


def _check_record(action: dict[str, Any], where: str) -> None:
    _optional(action, "format", _choice, ("mp3", "wav", "ogg"), prefix=f"{where}.")
    _optional(action, "split", _choice, ("conversation",), prefix=f"{where}.")
    _optional(action, "channels", _integer, 1, 32, prefix=f"{where}.")
    _optional(action, "endOnSilence", _integer, 3, 10, prefix=f"{where}.")
    _optional(action, "endOnKey", _string, prefix=f"{where}.", pattern=re.compile(r"^[0-9#*]$"))
    _optional(action, "timeOut", _integer, 3, 7200, prefix=f"{where}.")
    _optional(action, "beepStart", _boolean, prefix=f"{where}.")
    _check_event_target(action, where)


def _check_connect(action: dict[str, Any], where: str) -> None:
    endpoints = action.get("endpoint")
    if not isinstance(endpoints, list) or not endpoints:
        raise Invalid(f"{where}.endpoint", "must be an array with one endpoint")
    for index, endpoint in enumerate(endpoints):
        check_endpoint(endpoint, f"{where}.endpoint[{index}]")
    _optional(action, "from", _string, prefix=f"{where}.", pattern=re.compile(r"^\d+$"))
    _optional(action, "timeout", _integer, 0, 7200, prefix=f"{where}.")
    _optional(action, "limit", _integer, 0, 7200, prefix=f"{where}.")
    _optional(action, "machineDetection", _choice, ("continue", "hangup"), prefix=f"{where}.")
    _optional(action, "eventType", _choice, ("synchronous",), prefix=f"{where}.")
    _check_event_target(action, where)


def _check_conversation(action: dict[str, Any], where: str) -> None:
    _string(action.get("name"), f"{where}.name")
    if "musicOnHoldUrl" in action:
        _urls(action["musicOnHoldUrl"], f"{where}.musicOnHoldUrl")
    for flag in ("startOnEnter", "endOnExit", "record", "mute"):
        _optional(action, flag, _boolean, prefix=f"{where}.")
    _check_event_target(action, where)


def _check_notify(action: dict[str, Any], where: str) -> None:
    _object(action.get("payload"), f"{where}.payload")
    _check_event_target(action, where, required=True)


def _check_wait(action: dict[str, Any], where: str) -> None:
    _optional(action, "timeout", _number, 0.1, 7200, prefix=f"{where}.")


def _check_transfer(action: dict[str, Any], where: str) -> None:
    _string(action.get("conversationId"), f"{where}.conversationId")
    _optional(action, "mute", _boolean, prefix=f"{where}.")


_ACTIONS = {
    "talk": _check_talk,
    "stream": _check_stream,
    "input": _check_input,
    "record": _check_record,
    "connect": _check_connect,
    "conversation": _check_conversation,
    "notify": _check_notify,
    "wait": _check_wait,  # the two newest, in the official SDK (vonage-voice) but not in the schema
    "transfer": _check_transfer,
}


def check_ncco(value: Any, name: str = "ncco") -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise Invalid(name, "must be a non-empty array of actions")
    for index, action in enumerate(value):
        where = f"{name}[{index}]"
        _ACTIONS[_choice(_object(action, where).get("action"), f"{where}.action", tuple(_ACTIONS))](
            action, where
        )
    return value


def _check_create(body: dict[str, Any]) -> None:
    to = body.get("to")
    if not isinstance(to, list) or not to:
        raise Invalid("to", "is required: an array of endpoints")
    for index, endpoint in enumerate(to):
        check_endpoint(endpoint, f"to[{index}]")
    random_from = body.get("random_from_number", False)
    _boolean(random_from, "random_from_number")
    if ("from" in body) == random_from:
        raise Invalid("from", "give exactly one of from or random_from_number: true")
    if "from" in body:
        check_endpoint(body["from"], "from", caller=True)
    if ("ncco" in body) == ("answer_url" in body):
        raise Invalid("ncco", "give exactly one of ncco or answer_url")
    if "ncco" in body:
        check_ncco(body["ncco"])
    else:
        _urls(body["answer_url"], "answer_url")
        _optional(body, "answer_method", _choice, ("GET", "POST"))
    if "event_url" not in body:
        raise Invalid("event_url", "is required: this application has no event_url of its own")
    _urls(body["event_url"], "event_url")
    _optional(body, "event_method", _choice, ("GET", "POST"))
    _optional(body, "machine_detection", _choice, ("continue", "hangup"))
    if "advanced_machine_detection" in body:
        detection = _object(body["advanced_machine_detection"], "advanced_machine_detection")
        where = "advanced_machine_detection."
        _optional(detection, "behavior", _choice, ("continue", "hangup"), prefix=where)
        _optional(detection, "mode", _choice, ("default", "detect", "detect_beep"), prefix=where)
        _optional(detection, "beep_timeout", _integer, 30, 120, prefix=where)
    _optional(body, "length_timer", _integer, 1, 86400)
    _optional(body, "ringing_timer", _integer, 1, 120)


def validate_create(body: Any) -> tuple[str, str] | None:
    """The first problem with a create-call body, as (parameter, reason), or None."""
    try:
        _check_create(_object(body, "body"))
    except Invalid as problem:
        return problem.name, problem.reason
    return None


def _check_modify(body: dict[str, Any]) -> None:
    action = _choice(body.get("action"), "action", _MODIFY)
    if action != "transfer":
        return
    destination = _object(body.get("destination"), "destination")
    _choice(destination.get("type"), "destination.type", ("ncco",))
    if ("ncco" in destination) == ("url" in destination):
        raise Invalid("destination", "give exactly one of ncco or url")
    if "ncco" in destination:
        check_ncco(destination["ncco"], "destination.ncco")
    else:
        _urls(destination["url"], "destination.url")


def _check_talk_request(body: dict[str, Any]) -> None:
    _string(body.get("text"), "text", most=1500)
    _optional(body, "language", _choice, LANGUAGES)
    _optional(body, "style", _integer, 0, 100)
    _optional(body, "voice_name", _string)
    _optional(body, "premium", _boolean)
    _optional(body, "loop", _integer, 0, 1000)
    _optional(body, "level", _number, -1, 1)


def _check_stream_request(body: dict[str, Any]) -> None:
    _urls(body.get("stream_url"), "stream_url", one=False)
    _optional(body, "loop", _integer, 0, 1000)
    _optional(body, "level", _number, -1, 1)


def _check_dtmf_request(body: dict[str, Any]) -> None:
    _string(body.get("digits"), "digits", pattern=re.compile(r"^[0-9*#p]+$"))


def _check_subscribe(body: dict[str, Any]) -> None:
    _urls(body.get("event_url"), "event_url")


# -- calls --------------------------------------------------------------------------------------------


def _stamp(moment: float | None = None) -> str:
    """An event's time: ISO 8601 with milliseconds, UTC."""
    return datetime.fromtimestamp(moment or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _resource_time(moment: float) -> str:
    """A call resource's time, as the reference shows it: ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class _Call:
    uuid: str
    conversation_uuid: str
    to: dict[str, Any]
    caller: dict[str, Any]
    body: dict[str, Any]
    script: Script
    status: str = "started"
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    operations: list[str] = field(default_factory=list)
    """What the API was asked to do to the call (modify, talk, stream, DTMF, input), in order."""
    dtmf_listener: list[str] | None = None
    task: asyncio.Task[None] | None = None
    hangup_requested: bool = False
    transfer: list[dict[str, Any]] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    asked: int = 0
    """Questions (input actions) the callee has been asked so far."""
    files: str = ""
    """Where this API serves recordings: ``{host}/v1/files``."""

    @property
    def live(self) -> bool:
        return self.status not in _FINAL

    def resource(self) -> dict[str, Any]:
        resource = {
            "_links": {"self": {"href": f"/calls/{self.uuid}"}},
            "uuid": self.uuid,
            "conversation_uuid": self.conversation_uuid,
            "to": self.to,
            "from": self.caller,
            "status": self.status,
            "direction": "outbound",
        }
        return resource | self.details


def _page_links(query: dict[str, Any], count: int) -> dict[str, Any]:
    size, index = query["page_size"], query["record_index"]

    def href(record_index: int) -> dict[str, str]:
        params = {key: value for key, value in query.items() if value is not None}
        return {"href": "/calls?" + urlencode(params | {"record_index": record_index})}

    links = {"self": href(index), "first": href(0), "last": href(max(0, (count - 1) // size * size))}
    if index + size < count:
        links["next"] = href(index + size)
    if index > 0:
        links["prev"] = href(max(0, index - size))
    return links


def _when(value: str, name: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise Invalid(name, "must be a date-time such as 2016-11-14T07:45:14Z") from None


def _list_query(request: Request) -> dict[str, Any]:
    params = request.query_params
    if len(params.getlist("status")) > 1:
        raise Invalid("status", "may be given once")
    query: dict[str, Any] = {
        "page_size": 10,
        "record_index": 0,
        "order": params.get("order", "asc"),
        "status": params.get("status"),
        "date_start": params.get("date_start"),
        "date_end": params.get("date_end"),
        "conversation_uuid": params.get("conversation_uuid"),
    }
    for key, low, high in (("page_size", 1, 100), ("record_index", 0, 10**9)):
        if key in params:
            if not params[key].isdigit():
                raise Invalid(key, "must be an integer")
            query[key] = _integer(int(params[key]), key, low, high)
    _choice(query["order"], "order", ("asc", "desc"))
    if query["status"] is not None:
        _choice(query["status"], "status", STATUSES)
    for key in ("date_start", "date_end"):
        if query[key] is not None:
            _when(query[key], key)
    return query


# -- the app ------------------------------------------------------------------------------------------


def create_app(sim: Simulation, settings: VonageSettings) -> Starlette:
    """The simulator as an ASGI app."""
    pem = settings.private_key_pem()
    if pem is None:
        raise ValueError("the Vonage simulator needs the application's key")
    private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("the Vonage application key must be an RSA key")
    public_key = private_key.public_key()
    secret = settings.signature_secret.get_secret_value() if settings.signature_secret else None
    api_key = settings.api_key or "simulated-account"
    calls: dict[str, _Call] = {}
    recordings: dict[str, bytes] = {}
    client = callback_client()

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
        return _problem(
            401, "unauthorized", "Invalid credentials supplied", "You did not provide correct credentials."
        )

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            raise Invalid("body", "is not valid JSON") from None

    async def callback(url: str, method: str, payload: dict[str, Any]) -> httpx.Response | None:
        body = json.dumps(payload).encode()
        headers = {}
        if secret is not None:  # the application signs its callbacks
            headers["Authorization"] = f"Bearer {sign_webhook(body, secret=secret, api_key=api_key)}"
        if method == "GET":
            request = client.build_request("GET", url, params=payload, headers=headers)
        else:
            headers["Content-Type"] = "application/json"
            request = client.build_request("POST", url, content=body, headers=headers)
        return await sim.deliver(client, request)

    async def event(call: _Call, status: str, **extra: Any) -> list[dict[str, Any]] | None:
        """Tell ``event_url``; return the NCCO the application answered with, if any."""
        if status not in ("human", "machine"):
            call.status = status
        key = "call_uuid" if status in ("human", "machine") else "uuid"
        payload = {
            "from": call.caller.get("number"),
            "to": call.to.get("number"),
            key: call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": "outbound",
            "timestamp": _stamp(),
            **extra,
        }
        response = await callback(call.body["event_url"][0], call.body.get("event_method", "POST"), payload)
        return await instructions(call, response)

    async def tell(call: _Call, payload: dict[str, Any]) -> None:
        """An event with no status (an error, a transfer) to ``event_url``."""
        await callback(call.body["event_url"][0], call.body.get("event_method", "POST"), payload)

    async def instructions(call: _Call, response: httpx.Response | None) -> list[dict[str, Any]] | None:
        """The NCCO an application answered with; one that is not valid is reported to the
        event webhook as an error (no status, a reason) and the running NCCO goes on."""
        reply = _ncco_reply(response)
        if reply is None:
            return None
        try:
            return check_ncco(reply)
        except Invalid as problem:
            reason = f"Syntax error in NCCO. Invalid value type or action. {problem}"
            await tell(
                call, {"reason": reason, "conversation_uuid": call.conversation_uuid, "timestamp": _stamp()}
            )
            return None

    async def wait(call: _Call, seconds: float) -> bool:
        """Sleep through ``seconds`` of the call; True when a transfer cut it short."""
        call.wake.clear()
        try:
            await asyncio.wait_for(call.wake.wait(), seconds * sim.time_scale)
        except TimeoutError:
            return False
        return True

    async def ask(
        call: _Call, prompt: dict[str, Any] | None, collect: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """A prompt and the input after it, as the callee keys their answer; the reply's NCCO."""
        if prompt is None:
            prompt_seconds = 0.0
        elif prompt["action"] == "talk":
            prompt_seconds = speaking_seconds(prompt["text"])
        else:
            prompt_seconds = call.script.talk_seconds
        call.asked += 1
        if call.script.hangs_up(call.asked):
            await wait(call, prompt_seconds / 2)
            raise CalleeHungUp
        keys = call.script.keys(prompt_seconds, call.asked)
        barge = bool(prompt and prompt.get("bargeIn")) and bool(keys) and keys[0][0] < prompt_seconds
        start = keys[0][0] if barge else prompt_seconds
        if await wait(call, start):
            return None
        keys = [(moment, key) for moment, key in keys if moment >= start]  # unheard before input starts
        dtmf = collect.get("dtmf") or {}
        time_out = float(dtmf.get("timeOut", collect.get("timeOut", 3)))
        most = int(dtmf.get("maxDigits", collect.get("maxDigits", 4)))
        on_hash = bool(dtmf.get("submitOnHash", collect.get("submitOnHash", False)))
        digits, last, end, timed_out = "", start, None, True
        for moment, key in keys:
            if moment - last > time_out:
                break
            last = moment
            if key == "#" and on_hash:
                end, timed_out = moment, False
                break
            digits += key
            if len(digits) >= most:
                end, timed_out = moment, False
                break
        if end is None:
            end = last + time_out
        if await wait(call, end - start):
            return None
        payload = {
            "dtmf": {"digits": digits, "timed_out": timed_out},
            "from": call.caller.get("number"),
            "to": call.to.get("number"),
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "timestamp": _stamp(),
        }
        if "eventUrl" not in collect:
            return None
        return await instructions(
            call, await callback(collect["eventUrl"][0], collect.get("eventMethod", "POST"), payload)
        )

    async def play(call: _Call, ncco: list[dict[str, Any]]) -> None:
        """Run NCCO actions in order; a reply or a transfer replaces what is left."""
        actions, index = list(ncco), 0
        while index < len(actions) or call.transfer is not None:
            if call.transfer is not None:
                actions, index, call.transfer = call.transfer, 0, None
                continue
            action = actions[index]
            index += 1
            kind = action["action"]
            following = actions[index] if index < len(actions) else None
            reply: list[dict[str, Any]] | None = None
            if kind in ("talk", "stream") and following is not None and following["action"] == "input":
                index += 1
                reply = await ask(call, action, following)
            elif kind == "input":
                reply = await ask(call, None, action)
            elif kind == "talk":
                loops = action.get("loop", 1) or 600  # 0: until something else happens
                await wait(call, speaking_seconds(action["text"]) * loops)
            elif kind == "stream":
                await wait(call, call.script.talk_seconds * (action.get("loop", 1) or 600))
            elif kind == "notify":
                response = await callback(
                    action["eventUrl"][0], action.get("eventMethod", "POST"), action["payload"]
                )
                reply = await instructions(call, response)
            elif kind == "wait":
                await wait(call, float(action.get("timeout", 10)))
            elif kind == "transfer":
                return  # the call leaves this NCCO for another conversation
            elif kind == "record":
                if "endOnKey" in action or "endOnSilence" in action:
                    await record(call, action)  # synchronous: what follows waits for it
                else:
                    sim.spawn(record(call, action))
            elif kind == "connect":
                await connect(call, action)
            elif kind == "conversation":
                await wait(call, call.script.talk_seconds)
            if reply is not None:
                actions, index = reply, 0

    async def record(call: _Call, action: dict[str, Any]) -> None:
        """The callee speaks after the beep, for as long as they have to say (or the record's
        ``timeOut``), then presses the end key or falls silent: the recording goes to the
        action's ``eventUrl`` (else the call's) as a file this API serves."""
        started = time.time()
        seconds = min(call.script.talk_seconds, float(action.get("timeOut", 7200)))
        if call.script.behaviour == "answered":
            await wait(call, seconds)
            if "endOnSilence" in action and "endOnKey" not in action:
                await wait(call, float(action["endOnSilence"]))
        file_id = str(uuid.uuid4())
        recordings[file_id] = b"ID3" + bytes(int(seconds * 4000))  # 32 kbps MP3, as Vonage records
        payload = {
            "start_time": _stamp(started)[:-5] + "Z",
            "recording_url": f"{call.files}/{file_id}",
            "size": len(recordings[file_id]),
            "recording_uuid": str(uuid.uuid4()),
            "end_time": _stamp()[:-5] + "Z",
            "conversation_uuid": call.conversation_uuid,
            "timestamp": _stamp(),
        }
        target = action.get("eventUrl") or call.body["event_url"]
        await callback(target[0], action.get("eventMethod", "POST"), payload)

    async def connect(call: _Call, action: dict[str, Any]) -> None:
        """A leg to the endpoint, joined to the call's conversation when answered: its events go
        to the action's ``eventUrl`` (else the call's). An answered leg ends the call when its
        person hangs up; a leg that fails ends the action, and the NCCO goes on."""
        endpoint = action["endpoint"][0]
        number = endpoint.get("number") or endpoint.get("uri") or ""
        leg = str(uuid.uuid4())
        script = sim.transfer("+" + number if number.isdigit() else number, leg)
        target = action.get("eventUrl") or call.body["event_url"]

        async def event(status: str, **extra: Any) -> None:
            payload = {
                "from": action.get("from"),
                "to": number,
                "uuid": leg,
                "conversation_uuid": call.conversation_uuid,
                "status": status,
                "direction": "outbound",
                "timestamp": _stamp(),
                **extra,
            }
            await callback(target[0], action.get("eventMethod", "POST"), payload)

        await event("started")
        await wait(call, 1.0)
        await event("ringing")
        ring = float(action.get("timeout", 60))
        if script.behaviour in ("busy", "rejected", "failed"):
            await wait(call, min(script.ring_seconds, ring))
            await event(script.behaviour)
            return
        if script.behaviour == "no_answer" or script.ring_seconds >= ring:
            await wait(call, ring)
            await event("timeout")
            return
        await wait(call, script.ring_seconds)
        await event("answered")
        await wait(call, script.talk_seconds)
        duration = str(max(1, round(script.talk_seconds)))
        await event("completed", duration=duration, rate="0.01200000", price="0.00160000")
        raise CalleeHungUp  # the bridged call is over

    async def fetch_ncco(call: _Call) -> list[dict[str, Any]]:
        """The NCCO ``answer_url`` returns for this call (nothing to run if it returns none)."""
        query = {"to": call.to.get("number"), "from": call.caller.get("number"), "uuid": call.uuid}
        query["conversation_uuid"] = call.conversation_uuid
        url = call.body["answer_url"][0]
        if call.body.get("answer_method", "GET") == "POST":
            request = client.build_request("POST", url, json=query)
        else:
            request = client.build_request("GET", url, params=query)
        reply = _ncco_reply(await sim.deliver(client, request))
        try:
            return check_ncco(reply)
        except Invalid as problem:
            log.warning("answer_url %s returned no usable NCCO: %s", url, problem)
            return []

    async def detect(call: _Call, ncco: list[dict[str, Any]]) -> None:
        """What happens once the call is answered: machine detection as asked, and the NCCO."""
        machine = call.script.behaviour == "machine"
        advanced = call.body.get("advanced_machine_detection")
        standard = call.body.get("machine_detection")
        if advanced is None and standard is None:
            await play(call, ncco)
            return
        behaviour = (advanced or {}).get("behavior", "continue") if advanced else standard
        mode = advanced.get("mode", "detect") if advanced else "default"
        runner = asyncio.create_task(play(call, ncco)) if mode == "default" else None
        try:
            await wait(call, 3.0)  # the detector listens to the greeting
            if not machine:
                if advanced:
                    await event(call, "human")
            elif behaviour == "hangup":
                await event(call, "machine")
                return
            else:
                beep = mode in ("detect_beep", "default") and advanced is not None
                if mode != "detect_beep":
                    replace = await event(call, "machine")
                    if replace:
                        call.transfer = replace
                        call.wake.set()
                if beep:
                    timeout = float(advanced.get("beep_timeout", 45))  # type: ignore[union-attr]
                    beeped = timeout > BEEP_SECONDS - 3.0
                    await wait(call, min(BEEP_SECONDS - 3.0, timeout))
                    replace = await event(
                        call, "machine", sub_state="beep_start" if beeped else "beep_timeout"
                    )
                    if replace:
                        call.transfer = replace
                        call.wake.set()
            if runner is None:
                await play(call, ncco)
            else:
                await runner
        finally:
            if runner is not None and not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner

    async def converse(call: _Call) -> None:
        call.answered_at = time.time()
        if dtmf := call.to.get("dtmfAnswer"):  # sent before the NCCO runs; each p waits 500 ms
            await sim.pause(0.5 * dtmf.count("p") + 0.1 * len(dtmf.replace("p", "")))
        ncco = call.body["ncco"] if "ncco" in call.body else await fetch_ncco(call)
        limit = float(call.body.get("length_timer", 7200)) * sim.time_scale
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(detect(call, ncco), limit)

    def complete(call: _Call, duration: int) -> dict[str, Any]:
        call.ended_at = time.time()
        call.details = {
            "rate": "0.01200000",
            "price": f"{0.012 * duration / 60:.8f}",
            "duration": str(duration),
            "start_time": _resource_time(call.answered_at or call.created),
            "end_time": _resource_time(call.ended_at),
            "network": "310260",
        }
        return {
            **call.details,
            "start_time": _stamp(call.answered_at),
            "end_time": _stamp(call.ended_at),
        }

    async def run(call: _Call) -> None:
        async def emit(stage: str, *, duration: int = 0, **_: Any) -> None:
            if stage == "completed":
                await event(call, "completed", **complete(call, duration))
            else:
                await event(call, "timeout" if stage == "no_answer" else stage)

        try:
            await sim.run_call(
                call.script,
                ring_timeout=float(call.body.get("ringing_timer", 60)),
                emit=emit,
                conversation=lambda: converse(call),
            )
        except asyncio.CancelledError:
            if not call.hangup_requested or not call.live:
                raise
            if call.answered_at is None:
                await event(call, "cancelled")
            else:
                duration = max(1, round((time.time() - call.answered_at) / sim.time_scale))
                await event(call, "completed", **complete(call, duration))

    async def create_call(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        if (interference := await sim.interfere()) is not None:
            return interference
        if not sim.admit():
            return _problem(
                429, "throttled", "Too Many Requests", "You have exceeded the call creation rate."
            )
        try:
            body = await read_json(request)
            _check_create(_object(body, "body"))
        except Invalid as problem:
            return _invalid(problem.name, problem.reason)
        call_id = str(uuid.uuid4())
        to = dict(body["to"][0])
        number = to.get("number") or to.get("uri") or to.get("extension") or to.get("user") or ""
        call = _Call(
            uuid=call_id,
            conversation_uuid=f"CON-{uuid.uuid4()}",
            to=to,
            caller=dict(body.get("from") or {"type": "phone", "number": "14155550100"}),
            body=body,
            script=sim.place("+" + number if number.isdigit() else number, call_id, to.get("dtmfAnswer", "")),
            files=f"{str(request.base_url).rstrip('/')}/v1/files",
        )
        calls[call_id] = call
        call.task = sim.spawn(run(call))
        return JSONResponse(
            {
                "uuid": call_id,
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": call.conversation_uuid,
            },
            status_code=201,
        )

    async def list_calls(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        try:
            query = _list_query(request)
        except Invalid as problem:
            return _invalid(problem.name, problem.reason)
        chosen = [
            call
            for call in calls.values()
            if (query["status"] is None or call.status == query["status"])
            and (query["conversation_uuid"] is None or call.conversation_uuid == query["conversation_uuid"])
            and (query["date_start"] is None or call.created >= _when(query["date_start"], "date_start"))
            and (query["date_end"] is None or call.created <= _when(query["date_end"], "date_end"))
        ]
        chosen.sort(key=lambda call: call.created, reverse=query["order"] == "desc")
        index, size = query["record_index"], query["page_size"]
        return JSONResponse(
            {
                "count": len(chosen),
                "page_size": size,
                "record_index": index,
                "_links": _page_links(query, len(chosen)),
                "_embedded": {"calls": [call.resource() for call in chosen[index : index + size]]},
            }
        )

    def find(request: Request) -> _Call | Response:
        if not authorised(request):
            return unauthorised()
        call = calls.get(request.path_params["uuid"])
        return _not_found(request.path_params["uuid"]) if call is None else call

    async def get_call(request: Request) -> Response:
        call = find(request)
        return call if isinstance(call, Response) else JSONResponse(call.resource())

    async def in_progress(request: Request, check: Any) -> tuple[_Call, dict[str, Any]] | Response:
        """The live call a request is about, with its checked body; or the answer to give instead."""
        call = find(request)
        if isinstance(call, Response):
            return call
        try:
            body = _object(await read_json(request), "body") if check is not None else {}
            if check is not None:
                check(body)
        except Invalid as problem:
            return _invalid(problem.name, problem.reason)
        if not call.live:
            return _problem(400, "bad-request", "Bad Request", f"Call {call.uuid} is not in progress")
        return call, body

    async def modify(request: Request) -> Response:
        found = await in_progress(request, _check_modify)
        if isinstance(found, Response):
            return found
        call, body = found
        action = body["action"]
        call.operations.append(action)
        if action == "hangup":
            call.hangup_requested = True
            if call.task is not None:
                call.task.cancel()
        elif action == "transfer":
            destination = body["destination"]
            if "ncco" in destination:
                call.transfer = destination["ncco"]
            else:
                fetched = await sim.deliver(client, client.build_request("GET", destination["url"][0]))
                call.transfer = _ncco_reply(fetched) or []
            call.wake.set()
            # The leg moves to a conversation of its own, and the event webhook hears of it.
            moved_from, call.conversation_uuid = call.conversation_uuid, f"CON-{uuid.uuid4()}"
            sim.spawn(
                tell(
                    call,
                    {
                        "conversation_uuid_from": moved_from,
                        "conversation_uuid_to": call.conversation_uuid,
                        "type": "transfer",
                        "uuid": call.uuid,
                        "timestamp": _stamp(),
                    },
                )
            )
        return Response(status_code=204)

    def operation(check: Any, message: str) -> Any:
        async def endpoint(request: Request) -> Response:
            found = await in_progress(request, check)
            if isinstance(found, Response):
                return found
            call, _ = found
            call.operations.append(f"{request.method} {request.url.path.rsplit('/', 1)[-1]}")
            return _message(message, call.uuid)

        return endpoint

    async def subscribe(request: Request) -> Response:
        found = await in_progress(request, _check_subscribe if request.method == "PUT" else None)
        if isinstance(found, Response):
            return found
        call, body = found
        call.dtmf_listener = body.get("event_url")
        call.operations.append(f"{request.method} input/dtmf")
        return Response(status_code=200)

    async def download(request: Request) -> Response:
        """``GET /v1/files/{id}``: a recording, for the application that made it."""
        if not authorised(request):
            return unauthorised()
        audio = recordings.get(request.path_params["file_id"])
        if audio is None:
            return _not_found(request.path_params["file_id"])
        return Response(audio, media_type="audio/mpeg")

    async def operations(request: Request) -> Response:
        """Simulator only: what the API was asked to do to a call, for tests."""
        call = calls.get(request.path_params["uuid"])
        if call is None:
            return _not_found(request.path_params["uuid"])
        return JSONResponse({"status": call.status, "operations": call.operations})

    return Starlette(
        routes=[
            Route("/v1/calls", create_call, methods=["POST"]),
            Route("/v1/calls/", create_call, methods=["POST"]),
            Route("/v1/calls", list_calls, methods=["GET"]),
            Route("/v1/calls/", list_calls, methods=["GET"]),
            Route("/v1/calls/{uuid}", get_call, methods=["GET"]),
            Route("/v1/calls/{uuid}", modify, methods=["PUT"]),
            Route(
                "/v1/calls/{uuid}/stream", operation(_check_stream_request, "Stream started"), methods=["PUT"]
            ),
            Route("/v1/calls/{uuid}/stream", operation(None, "Stream stopped"), methods=["DELETE"]),
            Route("/v1/calls/{uuid}/talk", operation(_check_talk_request, "Talk started"), methods=["PUT"]),
            Route("/v1/calls/{uuid}/talk", operation(None, "Talk stopped"), methods=["DELETE"]),
            Route("/v1/calls/{uuid}/dtmf", operation(_check_dtmf_request, "DTMF sent"), methods=["PUT"]),
            Route("/v1/calls/{uuid}/input/dtmf", subscribe, methods=["PUT", "DELETE"]),
            Route("/v1/files/{file_id}", download, methods=["GET"]),
            Route("/_simulator/calls/{uuid}", operations, methods=["GET"]),
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
    return reply if isinstance(reply, list) and reply else None
