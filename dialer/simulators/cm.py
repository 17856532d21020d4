"""A CM.com Voice API stand-in: DTMF and Notification instructions, product-token auth, one callback.

Written from CM.com's API reference and its official .NET SDK (cmdotcom/talk-sdk-dotnet): the
kebab-case fields and their ranges, enums as strings or the SDK's integers, ``voice.gender``
``Male`` or ``Female``, prompts of at most 750 characters for a Notification and 1000 for a DTMF
instruction. A prompt of type ``TTS_SSML`` must be one SSML document: text inside a single
``<speak>`` element, well-formed XML (a TTS engine refuses anything else). The answer is one
``call-queued`` event per callee: a single object for ``callee`` (as the SDK reads it) and an
array for ``callees`` (as the documents show it). The callback's
``sip-disconnect-code`` is alphanumeric, ``BYE`` when the callee hangs up after a finished call.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer.settings import CmSettings
from dialer.simulators.base import CalleeHungUp, Script, Simulation, callback_client

DOCUMENTED_LIMIT = 10.0
"""Requests per second: not published by CM.com; taken as 10 calls per second."""

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PROMPT_TYPES = {"TTS", "TTS_SSML", "File", 0, 1, 2}
_GENDERS = {"Male", "Female", 0, 1}
_PROMPT_LIMITS = {"Notification": 750, "DTMF": 1000}
_KEYS = re.compile(r"^[0-9*#]+$")
_RANGES = {
    "min-digits": (1, 64),
    "max-digits": (1, 64),
    "max-attempts": (1, 10),
    "timeout": (1000, 10000),
    "max-ringing-timeout": (10, 60),
}
#: How each end of a call is reported: result code, description, SIP code and reason.
_ENDS = {
    "completed": (10, "finished", "BYE", "Normal call clearing"),
    "busy": (12, "rejected", 486, "Busy Here"),
    "rejected": (12, "rejected", 603, "Decline"),
    "no_answer": (9, "cancelled", 480, "Temporarily Unavailable"),
    "failed": (11, "failed", 503, "Service Unavailable"),
}


def _message(status: int, text: str) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status)


def ssml_problem(text: str) -> str | None:
    """Why ``text`` is not one SSML document (an XML element ``<speak>`` holding it all), or None."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        return f"not well-formed XML ({error})"
    if root.tag.rsplit("}", 1)[-1] != "speak":
        return f"the root element is <{root.tag}>, not <speak>"
    return None


def validate(body: Any, *, dtmf: bool) -> str | None:
    """The first schema problem of an instruction, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if ("callee" in body) == ("callees" in body):
        return "Give exactly one of callee or callees."
    caller = body.get("caller")
    if not isinstance(caller, str) or not 1 <= len(caller) <= 24 or not _E164.match(caller):
        return "caller is required: an E.164 number of at most 24 characters."
    limit = _PROMPT_LIMITS["DTMF" if dtmf else "Notification"]
    required = ["prompt", "valid-prompt"] if dtmf else ["prompt"]
    for name in required:
        value = body.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            return f"{name} is required, between 1 and {limit} characters."
    for name in ("prompt-type", "valid-prompt-type", "invalid-prompt-type"):
        if name in body and body[name] not in _PROMPT_TYPES:
            return f"{name} must be TTS, TTS_SSML or File."
        prompt = body.get(name.removesuffix("-type"))
        ssml = body.get(name) in ("TTS_SSML", 1)
        if ssml and isinstance(prompt, str) and (problem := ssml_problem(prompt)):
            return f"{name.removesuffix('-type')} is not valid SSML: {problem}"
    for name, (low, high) in _RANGES.items():
        if body.get(name) is not None and not (isinstance(body[name], int) and low <= body[name] <= high):
            return f"{name} must be between {low} and {high}."
    if dtmf and body.get("min-digits", 1) > body.get("max-digits", 64):
        return "min-digits must not exceed max-digits."
    if "terminators" in body and not (
        isinstance(body["terminators"], str) and _KEYS.match(body["terminators"])
    ):
        return "terminators must be one or more of the keys 0-9, * and #."
    voice = body.get("voice")
    if voice is not None:
        if not isinstance(voice, dict):
            return "voice must be an object."
        if "gender" in voice and voice["gender"] not in _GENDERS:
            return "voice.gender must be Male or Female."
    if "regex" in body:
        try:
            re.compile(body["regex"])
        except (re.error, TypeError):
            return "regex is not a valid regular expression."
    url = body.get("callback-url")
    if url is not None and not str(url).startswith(("http://", "https://")):
        return "callback-url must be an absolute URI."
    return None


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def create_app(sim: Simulation, settings: CmSettings) -> Starlette:
    if settings.product_token is None:
        raise ValueError("the CM.com simulator needs the product token")
    token = settings.product_token.get_secret_value()
    client = callback_client()

    async def run(body: dict[str, Any], call_id: str, callee: str, script: Script, *, dtmf: bool) -> None:
        started = datetime.now(UTC)
        answered: dict[str, datetime] = {}
        collected = {"digits": "", "valid": False, "attempts": 0}

        async def conversation() -> None:
            answered["at"] = datetime.now(UTC)
            await sim.pause(min(len(body["prompt"]) / 15, 20))
            if not dtmf or script.behaviour != "answered":
                return
            regex = body.get("regex", "[0-9]*")
            for attempt in range(1, int(body.get("max-attempts") or 1) + 1):
                collected["attempts"] = attempt
                if script.hangs_up(attempt):
                    raise CalleeHungUp
                digits = script.answer(attempt) or ""
                await sim.pause(2.0 if digits else int(body.get("timeout") or 5000) / 1000)
                if digits and re.fullmatch(regex, digits):
                    collected.update(digits=digits, valid=True)
                    return
                collected["digits"] = digits

        async def emit(stage: str, **_: Any) -> None:
            if stage not in _ENDS:
                return  # CM.com calls back once, when the call is over
            code, description, sip, reason = _ENDS[stage]
            payload: dict[str, Any] = {
                "type": "dtmf-finished" if dtmf else "notification-finished",
                "call-id": call_id,
                "instruction-id": body.get("instruction-id"),
                "caller": body["caller"],
                "callee": callee,
                "result": {
                    "code": code,
                    "description": description,
                    "sip-disconnect-code": sip,
                    "sip-disconnect-reason": reason,
                },
                "started-on": _stamp(started),
                "ended-on": _stamp(datetime.now(UTC)),
            }
            if "at" in answered:
                payload["answered-on"] = _stamp(answered["at"])
            if dtmf and stage == "completed":
                payload |= collected
            if body.get("callback-url"):
                await sim.deliver(client, client.build_request("POST", body["callback-url"], json=payload))

        await sim.run_call(
            script,
            ring_timeout=float(body.get("max-ringing-timeout") or 60),
            emit=emit,
            conversation=conversation,
        )

    async def instruct(request: Request) -> JSONResponse:
        if request.headers.get("x-cm-producttoken", "").lower() != token.lower():
            return _message(401, "Unauthorized: invalid product token.")
        if (interference := await sim.interfere()) is not None:
            return interference
        if not sim.admit():
            return _message(429, "Too many requests.")
        dtmf = request.url.path.endswith("/DTMF")
        try:
            body = await request.json()
        except ValueError:
            return _message(400, "The request body is not valid JSON.")
        if problem := validate(body, dtmf=dtmf):
            return _message(400, problem)
        callees = body["callees"] if "callees" in body else [body["callee"]]
        single = "callee" in body  # the SDK's shape: one object; the documents': an array
        if not all(isinstance(c, str) and _E164.match(c) for c in callees):
            refusal = {
                "type": "call-queued",
                "instruction-id": body.get("instruction-id"),
                "success": False,
                "error": "Invalid callee: numbers must be in E.164 format.",
            }
            return JSONResponse(refusal if single else [refusal])
        events = []
        for callee in callees:
            call_id = str(uuid.uuid4())
            script = sim.place(callee, call_id)
            sim.spawn(run(body, call_id, callee, script, dtmf=dtmf))
            events.append(
                {
                    "type": "call-queued",
                    "call-id": call_id,
                    "instruction-id": body.get("instruction-id"),
                    "caller": body["caller"],
                    "callee": callee,
                    "success": True,
                }
            )
        return JSONResponse(events[0] if single else events)

    return Starlette(
        routes=[
            Route("/voiceapi/v2/DTMF", instruct, methods=["POST"]),
            Route("/voiceapi/v2/Notification", instruct, methods=["POST"]),
            *sim.routes(),
        ],
        lifespan=sim.lifespan(client),
    )
