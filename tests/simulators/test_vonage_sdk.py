"""Vonage's official Python SDK drives every Voice call operation against the simulator.

The SDK only speaks https, so the simulator is served over TLS with a throwaway certificate
(trustme) that the SDK's HTTP client is told to trust. The simulator's signed callbacks are
verified with Vonage's official ``vonage-jwt``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import vonage_jwt
from vonage import Auth, HttpClientOptions, Vonage
from vonage_voice import (
    AudioStreamOptions,
    CreateCallRequest,
    ListCallsFilter,
    Talk,
    TtsStreamOptions,
)

from dialer.embedded import BackgroundServer
from dialer.settings import Settings
from dialer.simulators import simulator_app
from tests.simulators.callbacks import Application, Received, application


def _closing(app: Any) -> Any:
    """``app`` answering every request with ``Connection: close``: an idle TLS connection left in
    the SDK's pool would otherwise hold the server's shutdown (the SDK cannot be told to close)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def closing_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, closing_send if scope["type"] == "http" else send)

    return wrapped


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway CA the SDK trusts (through requests' CA bundle variable), and the server's PEM."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    server = authority.issue_cert("127.0.0.1")
    server.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    return str(tmp_path / "server.pem")


def _answer(received: Received) -> Any:
    """The stand-in application answers ``answer_url`` with an NCCO, callbacks with nothing."""
    if received.path == "/answer":
        return [{"action": "talk", "text": "Transferred here. " * 40, "loop": 0}]
    return None


@pytest.fixture
def callbacks() -> Iterator[tuple[Application, str]]:
    with application(_answer) as served:
        yield served


def _statuses(stand_in: Application) -> list[str]:
    return [event["status"] for received in stand_in.on("/event") if "status" in (event := received.json())]


@pytest.fixture
def sdk(settings: Settings, certificate: str) -> Iterator[tuple[Vonage, str]]:
    app = _closing(simulator_app("vonage", settings, rate_limit=50, time_scale=0.01))
    with BackgroundServer(app, certificate=certificate) as server:
        pem = settings.vonage.private_key_pem()
        assert pem is not None
        client = Vonage(
            Auth(application_id=settings.vonage.application_id, private_key=pem),
            HttpClientOptions(api_host=f"{server.host}:{server.port}", timeout=10),
        )
        yield client, server.url


def _operations(url: str, call_id: str) -> dict[str, Any]:
    with httpx.Client(verify=False) as client:  # the simulator's own test view
        answer: dict[str, Any] = client.get(f"{url}/_simulator/calls/{call_id}").json()
    return answer


def test_the_sdk_drives_every_call_operation(
    sdk: tuple[Vonage, str], callbacks: tuple[Application, str]
) -> None:
    client, url = sdk
    stand_in, app_url = callbacks
    voice = client.voice
    # A call still talking (loop 0) while the operations are tried on it.
    created = voice.create_call(
        CreateCallRequest(
            to=[{"type": "phone", "number": "12125550106"}],
            from_={"type": "phone", "number": "14155550100"},
            ncco=[Talk(text="Please hold.", loop=0)],
            event_url=[f"{app_url}/event"],
            ringing_timer=30,
        )
    )
    assert (created.status, created.direction) == ("started", "outbound")
    stand_in.wait_for(lambda: "answered" in _statuses(stand_in))

    info = voice.get_call(created.uuid)
    assert (info.uuid, info.to.number, info.status) == (created.uuid, "12125550106", "answered")
    listed, next_page = voice.list_calls(ListCallsFilter(page_size=10))
    assert [call.uuid for call in listed] == [created.uuid] and next_page is None

    voice.mute(created.uuid)
    voice.unmute(created.uuid)
    voice.earmuff(created.uuid)
    voice.unearmuff(created.uuid)
    talk = TtsStreamOptions(text="Hello", language="en-GB")
    assert voice.play_tts_into_call(created.uuid, talk).message == "Talk started"
    assert voice.stop_tts(created.uuid).message == "Talk stopped"
    audio = AudioStreamOptions(stream_url=["https://x.example/a.mp3"])
    assert voice.play_audio_into_call(created.uuid, audio).message == "Stream started"
    assert voice.stop_audio_stream(created.uuid).message == "Stream stopped"
    assert voice.play_dtmf_into_call(created.uuid, dtmf="1713").message == "DTMF sent"
    voice.transfer_call_ncco(created.uuid, [Talk(text="Now this.", loop=0)])
    voice.transfer_call_answer_url(created.uuid, f"{app_url}/answer")
    # The SDK has no call for these two operations of the API reference: plain HTTP does them.
    signed = {"Authorization": client.http_client.auth.create_jwt_auth_string()}
    with httpx.Client(base_url=url, verify=False, headers=signed) as http:
        path = f"/v1/calls/{created.uuid}/input/dtmf"
        subscribed = http.put(path, json={"event_url": [f"{app_url}/event"]})
        unsubscribed = http.delete(path)
    assert (subscribed.status_code, unsubscribed.status_code) == (200, 200)
    voice.hangup(created.uuid)

    stand_in.wait_for(lambda: "completed" in _statuses(stand_in))
    view = _operations(url, created.uuid)
    assert view["status"] == "completed"
    assert view["operations"] == [
        "mute",
        "unmute",
        "earmuff",
        "unearmuff",
        "PUT talk",
        "DELETE talk",
        "PUT stream",
        "DELETE stream",
        "PUT dtmf",
        "transfer",
        "transfer",
        "PUT input/dtmf",
        "DELETE input/dtmf",
        "hangup",
    ]
    finished = voice.get_call(created.uuid)
    assert finished.status == "completed" and finished.duration is not None
    assert time.strptime(finished.start_time or "", "%Y-%m-%d %H:%M:%S")  # the reference's format


def test_the_official_jwt_package_verifies_the_simulators_signed_callbacks(
    settings: Settings, sdk: tuple[Vonage, str], callbacks: tuple[Application, str]
) -> None:
    client, _ = sdk
    stand_in, app_url = callbacks
    client.voice.create_call(
        CreateCallRequest(
            to=[{"type": "phone", "number": "12125550106"}],
            from_={"type": "phone", "number": "14155550100"},
            ncco=[Talk(text="Hello")],
            event_url=[f"{app_url}/event"],
        )
    )
    stand_in.wait_for(lambda: "completed" in _statuses(stand_in))
    assert settings.vonage.signature_secret is not None
    secret = settings.vonage.signature_secret.get_secret_value()
    tokens = [received.headers["authorization"].removeprefix("Bearer ") for received in stand_in.on("/event")]
    assert len(tokens) >= 4  # started, ringing, answered, completed
    assert all(vonage_jwt.verify_signature(token, secret) for token in tokens)
    assert not vonage_jwt.verify_signature(tokens[0], "another secret of thirty-two chars")
