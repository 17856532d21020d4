from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from campaigns.flow import Flow, segment
from campaigns.outcomes import AttemptStatus
from campaigns.spec import CallOptions, Message, Question, legacy_flow
from dialer import db
from dialer.dispatch import place_call
from dialer.errors import ConfigurationError, ProviderRejected, WebhookAuthError, WebhookUnsigned
from dialer.models import Attempt, Campaign, Contact
from dialer.providers import vonage
from dialer.providers.base import CallOrder, Webhook
from dialer.receiver import create_app as receiver_app
from dialer.settings import Settings, VonageSettings
from dialer.simulators.vonage import sign_webhook, validate_create
from tests.dialer.factories import FakeVonage, campaign_with_contacts, queued_attempts, runtime
from tests.e2e import campaign_text, refusal

DATA = Path(__file__).parent / "data" / "vonage"


def order(**changes: object) -> CallOrder:
    """A call of a campaign with a ``[message]`` and maybe a ``[question]`` (give a ``flow`` to
    call with one of its own); the message's fields and the order's are given alike."""
    values: dict[str, object] = {
        "to": "+12125550106",
        "caller_id": "+14155550100",
        "text": "Hello Ada",
        "audio_url": None,
        "language": "en-US",
        "voice": None,
        "ssml": False,
        "question": Question(prompt="Press 1 or 2", pattern="[12]", choices={"1": "yes", "2": "no"}),
        "callback_url": "http://127.0.0.1:9/webhooks/vonage/TOKEN",  # loopback: simulators call back there
        "reference": "7",
        "variables": {},
    } | changes
    message = {name: values.pop(name) for name in ("text", "audio_url", "language", "voice", "ssml")}
    question = values.pop("question")
    if "flow" not in values:
        values["flow"] = legacy_flow(Message(**message), question)  # type: ignore[arg-type]
    return CallOrder(**values)  # type: ignore[arg-type]


def test_create_call_speaks_the_documented_body(settings: Settings) -> None:
    request = vonage.build_call(order(), settings.vonage)
    body = json.loads(request.content)
    assert request.method == "POST" and str(request.url) == "https://api.nexmo.com/v1/calls"
    assert body["to"] == [{"type": "phone", "number": "12125550106"}]
    assert body["from"] == {"type": "phone", "number": "14155550100"}
    assert body["event_url"] == ["http://127.0.0.1:9/webhooks/vonage/TOKEN/event"]
    assert [action["action"] for action in body["ncco"]] == ["talk", "talk", "input"]
    assert body["ncco"][2]["dtmf"] == {"maxDigits": 1, "timeOut": 5, "submitOnHash": True}
    assert body["ncco"][2]["eventUrl"] == [
        "http://127.0.0.1:9/webhooks/vonage/TOKEN/input?step=question&seq=0&try=1"
    ]
    assert validate_create(body) is None


def test_an_extension_is_sent_as_dtmf_once_the_call_is_answered(settings: Settings) -> None:
    body = json.loads(vonage.build_call(order(extension="123"), settings.vonage).content)
    assert body["to"] == [{"type": "phone", "number": "12125550106", "dtmfAnswer": "pp123"}]
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


@pytest.mark.parametrize("tamper", ["secret", "body", "api_key", "not a bearer"])
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
    if tamper == "not a bearer":
        webhook = Webhook(
            kind="event", method="POST", headers={"authorization": "Basic eDp5"}, query={}, body=body
        )
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
        vonage.api_token(VonageSettings(application_id="app", private_key=key))


# -- unsigned callbacks, as applications without signing send them ----------------------------------


def _unsigned(body: bytes) -> Webhook:
    return Webhook(kind="event", method="POST", headers={}, query={}, body=body)


def test_an_unsigned_callback_passes_to_the_token_check_unless_signatures_are_required(
    settings: Settings,
) -> None:
    body = (DATA / "event_answered.json").read_bytes()
    vonage.verify_webhook(_unsigned(body), settings.vonage)  # the URL's token decides
    required = settings.vonage.model_copy(update={"require_signature": True})
    with pytest.raises(WebhookUnsigned):
        vonage.verify_webhook(_unsigned(body), required)


def test_a_signature_is_checked_even_where_it_is_not_required(settings: Settings) -> None:
    body = (DATA / "event_answered.json").read_bytes()
    forged = _signed(settings, body, secret="f" * 64)
    assert not settings.vonage.require_signature
    with pytest.raises(WebhookAuthError):
        vonage.verify_webhook(forged, settings.vonage)


def test_without_an_api_key_the_signature_still_verifies(settings: Settings) -> None:
    body = (DATA / "event_answered.json").read_bytes()
    vonage.verify_webhook(_signed(settings, body), settings.vonage.model_copy(update={"api_key": None}))


@pytest.mark.parametrize("missing", ["api_key", "signature_secret"])
def test_required_signatures_without_the_key_or_secret_refuse_to_start(
    settings: Settings, missing: str
) -> None:
    assert VonageSettings().api_key is None  # no placeholder account
    broken = settings.model_copy(
        update={"vonage": settings.vonage.model_copy(update={"require_signature": True, missing: None})}
    )
    with pytest.raises(
        ConfigurationError, match="DIALER_VONAGE__SIGNATURE_SECRET and DIALER_VONAGE__API_KEY"
    ):
        receiver_app(broken)


# -- what the call speaks ------------------------------------------------------------------------


def test_ssml_is_wrapped_in_speak_with_the_contacts_values_escaped(settings: Settings) -> None:
    message = Message(text="Hello {name}, <break time='1s'/> see you", ssml=True)
    text = message.render({"name": "Smith & Sons <Ltd>"})
    body = json.loads(vonage.build_call(order(text=text, ssml=True, question=None), settings.vonage).content)
    assert body["ncco"][0]["text"] == (
        "<speak>Hello Smith &amp; Sons &lt;Ltd&gt;, <break time='1s'/> see you</speak>"
    )


def test_plain_text_is_sent_as_it_is(settings: Settings) -> None:
    body = json.loads(vonage.build_call(order(text="Fish & chips", question=None), settings.vonage).content)
    assert body["ncco"][0]["text"] == "Fish & chips"


def test_a_voice_style_number_is_sent_as_the_style(settings: Settings) -> None:
    body = json.loads(vonage.build_call(order(voice="2", question=None), settings.vonage).content)
    assert body["ncco"][0]["style"] == 2


def test_a_message_too_long_for_one_talk_is_refused_before_sending(settings: Settings) -> None:
    with pytest.raises(ProviderRejected, match=r"1501 characters.*at most 1500"):
        vonage.build_call(order(text="x" * 1501, question=None), settings.vonage)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (CallOptions(), {"machine_detection": "continue"}),
        (CallOptions(on_machine="hangup"), {"machine_detection": "hangup"}),
        (
            CallOptions(on_machine="leave_message"),
            {"advanced_machine_detection": {"behavior": "continue", "mode": "default"}},
        ),
        (
            CallOptions(on_machine="leave_message", beep_timeout=timedelta(seconds=45)),
            {"advanced_machine_detection": {"behavior": "continue", "mode": "default", "beep_timeout": 45}},
        ),
        (
            CallOptions(max_duration=timedelta(minutes=5)),
            {"machine_detection": "continue", "length_timer": 300},
        ),
    ],
)
def test_the_campaigns_call_options_become_machine_detection_and_the_length_timer(
    settings: Settings, options: CallOptions, expected: dict[str, object]
) -> None:
    body = json.loads(vonage.build_call(order(call=options), settings.vonage).content)
    chosen = {
        key: body[key]
        for key in ("machine_detection", "advanced_machine_detection", "length_timer")
        if key in body
    }
    assert chosen == expected


def test_a_machine_beep_is_answered_with_the_message_alone() -> None:
    event = vonage.parse_webhook(
        Webhook(
            kind="event",
            method="POST",
            headers={},
            query={},
            body=json.dumps({"call_uuid": "c", "status": "machine", "sub_state": "beep_start"}).encode(),
        )
    )
    assert (event.answered_by, event.message_now) == ("machine", True)
    detected = vonage.parse_webhook(
        Webhook(
            kind="event", method="POST", headers={}, query={}, body=b'{"call_uuid": "c", "status": "machine"}'
        )
    )
    assert (detected.answered_by, detected.message_now) == ("machine", False)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ('voice = "Amy"', "message.voice: Vonage picks a voice by language and style"),
        ('language = "xx-XX"', "message.language: Vonage does not speak 'xx-XX'"),
        ("", "question.terminator: Vonage ends input on '#' only"),
        ('caller_id = "hello"', "caller_id: 'hello' is not a valid number in E.164 form"),
    ],
)
def test_what_vonage_would_change_or_refuse_is_refused_at_create(change: str, problem: str) -> None:
    text = campaign_text("vonage").replace('terminator = "#"', "") + "\n"
    if not change:
        text = text.replace('prompt = "Press 1', 'terminator = "*"\nprompt = "Press 1')
    elif change.startswith("caller_id"):
        text = text.replace('caller_id = "+14155550100"', change)
    else:
        text = text.replace("[message]\n", f"[message]\n{change}\n")
    assert problem in refusal(text)


@pytest.mark.parametrize(
    "value",
    [
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7 a key pasted without its header",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\n-----END PRIVATE KEY-----\n",
        "line one\nline two of a key",
    ],
)
def test_a_bad_private_key_is_named_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        vonage.api_token(VonageSettings(application_id="app", private_key=value))
    assert "DIALER_VONAGE__PRIVATE_KEY" in str(caught.value)
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw" not in str(caught.value)
    assert "line two" not in str(caught.value)


def test_a_contacts_own_language_speaks_every_talk_of_the_call(settings: Settings) -> None:
    flow = Flow.model_validate(
        {
            "language": "en-US",
            "voice": "2",
            "language_column": "language",
            "steps": {
                "hello": {"say": "{greeting}", "choices": {"1": "yes"}, "next": "bye"},
                "bye": {"say": "{goodbye}"},
            },
        }
    )
    spanish = order(flow=flow, variables={"greeting": "Hola", "goodbye": "Adiós", "language": "es-US"})
    body = json.loads(vonage.build_call(spanish, settings.vonage).content)
    assert [(a["text"], a["language"], a["style"]) for a in body["ncco"] if a["action"] == "talk"] == [
        ("Hola", "es-US", 2)
    ]
    reply = vonage.segment_ncco(segment(flow, "bye"), spanish, 1)
    assert reply == [{"action": "talk", "text": "Adiós", "language": "es-US", "style": 2}]
    unset = order(flow=flow, variables={"greeting": "Hello", "goodbye": "Bye", "language": ""})
    assert json.loads(vonage.build_call(unset, settings.vonage).content)["ncco"][0]["language"] == "en-US"


def test_an_unset_application_id_pauses_the_campaign_naming_the_setting(settings: Settings) -> None:
    unset = settings.model_copy(update={"vonage": settings.vonage.model_copy(update={"application_id": ""})})
    vonage_api, enqueued = FakeVonage(), []
    rt = runtime(unset, vonage_api, enqueued)
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    place_call(rt, attempt.id or 0)
    assert vonage_api.requests == []  # not a 401 on every call: nothing is sent
    with db.session_scope(settings.database_url) as session:
        stopped = session.get(Campaign, campaign.id)
        withdrawn = session.get(Attempt, attempt.id)
        contact = session.get(Contact, attempt.contact_id)
    assert stopped is not None and stopped.status == "paused"
    assert stopped.reason == "paused: DIALER_VONAGE__APPLICATION_ID is not set (your Vonage application's id)"
    assert withdrawn is None and contact is not None  # called once the operator has set it
    assert (contact.state, contact.attempts) == ("pending", 0)
