"""Each provider's callback statuses, row by row, from payloads shaped like the documents' examples."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from campaigns.outcomes import AttemptStatus
from dialer.errors import ProviderRejected, ProviderTimeout
from dialer.providers import PROVIDERS, cequens, cm, fractel, get_provider, routee
from dialer.providers.base import CallEvent, Provider, Webhook
from dialer.settings import CequensSettings
from tests.e2e import campaign_text, refusal
from tests.providers.test_vonage import order

DATA = Path(__file__).parent / "data"


def _parse(provider: Provider, kind: str, name: str, method: str = "POST") -> CallEvent:
    body = (DATA / provider.name / f"{name}.json").read_bytes()
    query: dict[str, str] = {}
    if method == "GET":
        query = json.loads(body)
        body = urlencode(query).encode()
    return provider.parse_webhook(Webhook(kind=kind, method=method, headers={}, query=query, body=body))


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("finished", AttemptStatus.COMPLETED),
        ("cancelled", AttemptStatus.NO_ANSWER),
        ("failed", AttemptStatus.FAILED),
        ("rejected", AttemptStatus.REJECTED),
        ("rejected_busy", AttemptStatus.BUSY),
        ("notification_finished", AttemptStatus.COMPLETED),
    ],
)
def test_cm_result_codes(name: str, status: AttemptStatus) -> None:
    event = _parse(cm.PROVIDER, "callback", name)
    assert event.status == status
    assert event.call_id == "2ec8ae8a-6e3c-4a87-b0b4-2f6b0c3f8a11"


def test_cm_finished_dtmf_carries_digits_and_duration() -> None:
    event = _parse(cm.PROVIDER, "callback", "finished")
    assert (event.digits, event.input_complete, event.duration) == ("1", True, 32)
    assert _parse(cm.PROVIDER, "callback", "notification_finished").digits is None  # nothing asked


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("Queued", None),
        ("Initiated", AttemptStatus.DIALING),
        ("Ringing", AttemptStatus.RINGING),
        ("InProgress", AttemptStatus.ANSWERED),
        ("Completed", AttemptStatus.COMPLETED),
        ("Busy", AttemptStatus.BUSY),
        ("NoAnswer", AttemptStatus.NO_ANSWER),
        ("Failed", AttemptStatus.FAILED),
        ("Unknown", None),
    ],
)
def test_routee_statuses(name: str, status: AttemptStatus | None) -> None:
    event = _parse(routee.PROVIDER, "status", f"status_{name}")
    assert event.status == status
    assert event.call_id == "7f0c9a4e-3b1d-4c55-a1c2-9e8f7a6b5c4d"
    assert event.account_problem is None


@pytest.mark.parametrize("name", ["Unsent", "Terminated"])
def test_routee_unsent_and_terminated_are_the_accounts_balance_not_the_callee(name: str) -> None:
    event = _parse(routee.PROVIDER, "status", f"status_{name}")
    assert event.status is None  # nothing happened to the callee
    assert event.account_problem is not None and "balance ran out" in event.account_problem


def test_routee_completed_price_collect_and_machine() -> None:
    assert (
        _parse(routee.PROVIDER, "status", "status_Completed").duration,
        _parse(routee.PROVIDER, "status", "status_Completed").price,
    ) == (32, "0.0085")
    collected = _parse(routee.PROVIDER, "collect", "collect")
    assert (collected.digits, collected.input_complete) == ("2", False)  # maybe a piece of the answer
    assert _parse(routee.PROVIDER, "machine", "machine").answered_by == "machine"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("initiated", AttemptStatus.DIALING),
        ("ringing", AttemptStatus.RINGING),
        ("answered", AttemptStatus.ANSWERED),
        ("completed", AttemptStatus.COMPLETED),
        ("busy", AttemptStatus.BUSY),
        ("no-answer", AttemptStatus.NO_ANSWER),
        ("failed", AttemptStatus.FAILED),
        ("rejected", AttemptStatus.REJECTED),
    ],
)
def test_cequens_statuses(name: str, status: AttemptStatus) -> None:
    event = _parse(cequens.PROVIDER, "status", f"status_{name}")
    assert (event.status, event.call_id) == (status, "5d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6")


def test_cequens_dtmf_arrives_as_a_get_query() -> None:
    event = _parse(cequens.PROVIDER, "dtmf", "dtmf_query", method="GET")
    assert (event.digits, event.input_complete, event.call_id) == (
        "1",
        True,
        "5d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6",
    )


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("begin", AttemptStatus.DIALING),
        ("end_ANSWERED", AttemptStatus.COMPLETED),
        ("end_NO_ANSWER", AttemptStatus.NO_ANSWER),
        ("end_REJECTED", AttemptStatus.REJECTED),
        ("end_BUSY", AttemptStatus.BUSY),
        ("end_CANCEL", AttemptStatus.CANCELLED),
        ("end_INVALID", AttemptStatus.REJECTED),
        ("end_FAILED", AttemptStatus.FAILED),
        ("end_FAILED_503", AttemptStatus.FAILED),
    ],
)
def test_fractel_dispositions(name: str, status: AttemptStatus) -> None:
    event = _parse(fractel.PROVIDER, "event", name)
    assert (event.status, event.call_id) == (status, "c0ffee00-1234-4abc-9def-001122334455")


def test_fractel_answered_reports_billable_seconds() -> None:
    assert _parse(fractel.PROVIDER, "event", "end_ANSWERED").duration == 41


@pytest.mark.parametrize(
    ("e164", "dialled"), [("+12125550106", "12125550106"), ("+4989456789", "0114989456789")]
)
def test_fractel_dials_us_and_international_numbers_as_documented(e164: str, dialled: str) -> None:
    assert fractel.dial_string(e164) == dialled


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_a_create_answer_without_a_call_id_counts_as_lost_not_refused(name: str) -> None:
    answer = {"cequens": {"replyCode": 0, "data": {}}, "cm": [{"success": True}]}.get(name, {})
    with pytest.raises(ProviderTimeout):
        PROVIDERS[name].parse_call(httpx.Response(201, json=answer))


def test_cm_refusing_the_instruction_is_a_rejection_with_its_reason() -> None:
    answer = [{"type": "call-queued", "success": False, "error": "Invalid callee"}]
    with pytest.raises(ProviderRejected, match="Invalid callee"):
        cm.parse_call(httpx.Response(200, json=answer))


@pytest.mark.parametrize(
    ("provider", "language", "refused"),
    [
        ("vonage", "xx-XX", True),
        ("vonage", "de-DE", False),
        ("routee", "ja-JP", True),
        ("cm", "xx-YY", True),  # passed through to CM.com before
        ("cm", "nl-NL", False),
        ("fractel", "fr-FR", True),  # Fractel's TTS takes no language: it was ignored before
        ("cequens", "de-DE", True),  # no Cequens voice speaks it
        ("cequens", "ar-AE", False),
    ],
)
def test_every_providers_languages_are_checked_at_create(provider: str, language: str, refused: bool) -> None:
    text = campaign_text(provider).replace("[message]\n", f'[message]\nlanguage = "{language}"\n')
    problem = refusal(text)
    title = get_provider(provider).title
    assert (f"message.language: {title} does not speak {language!r}" in problem) == refused, problem


@pytest.mark.parametrize(
    ("language", "voice", "sent", "neural"),
    [
        ("en-US", None, "Joanna", False),  # not Cequens's own default, Zeina, who speaks Arabic
        ("arb", None, "Zeina", False),
        ("ar-AE", None, "Hala", True),  # a neural voice only
        ("en-US", "Matthew", "Matthew", False),
    ],
)
def test_cequens_speaks_in_a_voice_of_the_calls_language(
    language: str, voice: str | None, sent: str, neural: bool
) -> None:
    body = json.loads(
        cequens.build_call(
            order(language=language, voice=voice, question=None), CequensSettings(), "t"
        ).content
    )
    assert (body["voiceName"], body["neural"]) == (sent, neural)


def test_a_cequens_voice_of_another_language_is_refused() -> None:
    text = campaign_text("cequens").replace("[message]\n", '[message]\nvoice = "Zeina"\n')
    assert "message.voice: Zeina speaks arb, not the call's en-US" in refusal(text)
