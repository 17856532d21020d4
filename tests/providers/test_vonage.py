from __future__ import annotations

import json
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from campaigns.outcomes import AttemptStatus
from campaigns.spec import Question
from dialer.errors import ConfigurationError, WebhookAuthError
from dialer.providers import vonage
from dialer.providers.base import CallOrder, Webhook
from dialer.settings import Settings, VonageSettings
from dialer.simulators.vonage import sign_webhook, validate_create

DATA = Path(__file__).parent / "data" / "vonage"


def order(**changes: object) -> CallOrder:
    values: dict[str, object] = {
        "to": "+12125550106",
        "caller_id": "+14155550100",
        "text": "Hello Ada",
        "audio_url": None,
        "language": "en-US",
        "voice": None,
        "ssml": False,
        "question": Question(prompt="Press 1 or 2", pattern="[12]", choices={"1": "yes", "2": "no"}),
        "callback_url": "https://dialer.example/webhooks/vonage/TOKEN",
        "reference": "TOKEN",
    }
    return CallOrder(**(values | changes))  # type: ignore[arg-type]


def test_create_call_speaks_the_documented_body(settings: Settings) -> None:
    request = vonage.build_call(order(), settings.vonage)
    body = json.loads(request.content)
    assert request.method == "POST" and str(request.url) == "https://api.nexmo.com/v1/calls"
    assert body["to"] == [{"type": "phone", "number": "12125550106"}]
    assert body["from"] == {"type": "phone", "number": "14155550100"}
    assert body["event_url"] == ["https://dialer.example/webhooks/vonage/TOKEN/event"]
    assert [action["action"] for action in body["ncco"]] == ["talk", "talk", "input"]
    assert body["ncco"][2]["dtmf"] == {"maxDigits": 1, "timeOut": 5, "submitOnHash": True}
    assert body["ncco"][2]["eventUrl"] == ["https://dialer.example/webhooks/vonage/TOKEN/input"]
    assert validate_create(body) is None


def test_audio_messages_stream_the_url(settings: Settings) -> None:
    body = json.loads(
        vonage.build_call(
            order(text=None, audio_url="https://cdn/a.mp3", question=None), settings.vonage
        ).content
    )
    assert body["ncco"] == [{"action": "stream", "streamUrl": ["https://cdn/a.mp3"]}]


def test_the_api_jwt_is_rs256_with_the_documented_claims(settings: Settings) -> None:
    request = vonage.build_call(order(), settings.vonage)
    token = request.headers["Authorization"].removeprefix("Bearer ")
    pem = settings.vonage.private_key_pem()
    assert pem is not None
    public = serialization.load_pem_private_key(pem.encode(), password=None).public_key()
    claims = jwt.decode(token, public, algorithms=["RS256"])  # type: ignore[arg-type]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["application_id"] == settings.vonage.application_id
    assert claims["exp"] - claims["iat"] == 15 * 60 and claims["jti"]


@pytest.mark.parametrize(
    ("name", "status", "answered_by"),
    [
        ("started", AttemptStatus.DIALING, None),
        ("ringing", AttemptStatus.RINGING, None),
        ("answered", AttemptStatus.ANSWERED, None),
        ("completed", AttemptStatus.COMPLETED, None),
        ("busy", AttemptStatus.BUSY, None),
        ("timeout", AttemptStatus.NO_ANSWER, None),
        ("unanswered", AttemptStatus.NO_ANSWER, None),
        ("cancelled", AttemptStatus.CANCELLED, None),
        ("rejected", AttemptStatus.REJECTED, None),
        ("failed", AttemptStatus.FAILED, None),
        ("disconnected", None, None),
        ("machine", None, "machine"),
    ],
)
def test_each_event_status_maps_to_the_common_vocabulary(
    name: str, status: AttemptStatus | None, answered_by: str | None
) -> None:
    body = (DATA / f"event_{name}.json").read_bytes()
    event = vonage.parse_webhook(Webhook(kind="event", method="POST", headers={}, query={}, body=body))
    assert event.status == status
    assert event.answered_by == answered_by
    assert event.call_id == "63f61863-4a51-4f6b-86e1-46edebcf9356"


def test_completed_carries_duration_and_price() -> None:
    body = (DATA / "event_completed.json").read_bytes()
    event = vonage.parse_webhook(Webhook(kind="event", method="POST", headers={}, query={}, body=body))
    assert (event.duration, event.price) == (60, "23.40")


def test_input_carries_the_digits() -> None:
    body = (DATA / "input.json").read_bytes()
    event = vonage.parse_webhook(Webhook(kind="input", method="POST", headers={}, query={}, body=body))
    assert event.digits == "1" and event.input_complete


def _signed(
    settings: Settings, body: bytes, *, secret: str | None = None, api_key: str | None = None
) -> Webhook:
    assert settings.vonage.signature_secret is not None
    token = sign_webhook(
        body,
        secret=secret or settings.vonage.signature_secret.get_secret_value(),
        api_key=api_key or settings.vonage.api_key,
    )
    return Webhook(
        kind="event", method="POST", headers={"authorization": f"Bearer {token}"}, query={}, body=body
    )


def test_a_signed_webhook_verifies(settings: Settings) -> None:
    body = (DATA / "event_answered.json").read_bytes()
    vonage.verify_webhook(_signed(settings, body), settings.vonage)


@pytest.mark.parametrize("tamper", ["secret", "body", "api_key", "missing"])
def test_a_forged_or_tampered_webhook_is_refused(settings: Settings, tamper: str) -> None:
    body = (DATA / "event_answered.json").read_bytes()
    webhook = _signed(
        settings,
        body,
        secret="x" * 32 if tamper == "secret" else None,
        api_key="other" if tamper == "api_key" else None,
    )
    if tamper == "body":
        webhook = Webhook(
            kind="event",
            method="POST",
            headers=webhook.headers,
            query={},
            body=body.replace(b"answered", b"completed"),
        )
    if tamper == "missing":
        webhook = Webhook(kind="event", method="POST", headers={}, query={}, body=body)
    with pytest.raises(WebhookAuthError):
        vonage.verify_webhook(webhook, settings.vonage)


def test_a_status_lookup_reads_the_call_resource(settings: Settings) -> None:
    request = vonage.build_lookup("63f61863", settings.vonage)
    assert request.method == "GET" and request.url.path == "/v1/calls/63f61863"
    response = httpx.Response(200, json=json.loads((DATA / "event_completed.json").read_text()))
    assert vonage.parse_lookup(response).status == AttemptStatus.COMPLETED


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
            "is not a usable PEM private key",
        ),
        (
            ec.generate_private_key(ec.SECP256R1())
            .private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            .decode(),
            "must be an RSA key",
        ),
    ],
)
def test_an_unusable_private_key_is_a_configuration_error(key: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        vonage.api_token(VonageSettings(private_key=key))
