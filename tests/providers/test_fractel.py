"""Fractel FoneStorm as its documents and its 2.4 Swagger spec describe it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlmodel import col, select

from campaigns.spec import parse_campaign
from dialer import db
from dialer.errors import ProviderRejected
from dialer.importer import import_contacts
from dialer.models import WebhookEvent, utcnow
from dialer.operations import create_campaign
from dialer.providers import fractel
from dialer.settings import FractelSettings, Settings
from dialer.simulators.base import Script
from dialer.simulators.fractel import UNCONNECTED_4XX
from tests.e2e import campaign_text, refusal
from tests.providers.live import call, live
from tests.providers.specs import fonestorm_operation, fonestorm_schema, problems
from tests.providers.test_vonage import order
from tests.simulators.callbacks import application

TOO_LONG = "+4915112345678"  # 011 + 4915112345678: 16 digits


@pytest.mark.parametrize(
    ("e164", "reason"),
    [
        ("+12125550106", None),
        ("+4989456789", None),
        (TOO_LONG, "at most 15 digits: this one would be 16 (0114915112345678)"),
    ],
)
def test_a_number_too_long_to_dial_the_documented_way_is_named(e164: str, reason: str | None) -> None:
    problem = fractel.check_number(e164)
    assert (problem is None) == (reason is None)
    if reason:
        assert problem is not None and reason in problem


def test_such_numbers_are_rejected_at_import_with_the_reason(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(f"phone,first_name\n+12125550106,Ada\n{TOO_LONG},Bea\n+4989456789,Cy\n")
    with db.session_scope(settings.database_url) as session:
        campaign = create_campaign(session, parse_campaign(campaign_text("fractel")))
        report = import_contacts(session, campaign=campaign, path=path, now=utcnow())
    assert report.accepted == 2
    assert [(reject.row, reject.value) for reject in report.rejects] == [(3, TOO_LONG)]
    assert "Fractel dials international numbers as 011" in report.rejects[0].reason


def test_and_refused_before_sending_if_they_came_another_way() -> None:
    with pytest.raises(ProviderRejected, match="at most 15 digits"):
        fractel.build_call(order(to=TOO_LONG, question=None), FractelSettings(), "token")


def test_the_call_request_is_the_documented_form_and_outlasts_the_ringing() -> None:
    request = fractel.build_call(order(question=None), FractelSettings(), "token")
    assert dict(parse_qsl(request.content.decode())) == {
        "fonenumber": "4155550100",
        "to": "12125550106",
        "service_type": "TTS",
        "service_id": "Hello Ada",
    }
    assert request.extensions["timeout"]["read"] == 90.0  # not the usual 10 s: the API answers on connect


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ('caller_id = "+442079460000"', "caller_id: Fractel calls from one of the account's FoneNumbers"),
        ('voice = "Amy"', "message.voice: Fractel's text-to-speech has no choice of voice"),
    ],
)
def test_what_fractel_cannot_do_is_refused_at_create(change: str, problem: str) -> None:
    text = campaign_text("fractel")
    if change.startswith("caller_id"):
        text = text.replace('caller_id = "+14155550100"', change)
    else:
        text = text.replace("[message]\n", f"[message]\n{change}\n")
    assert problem in refusal(text)


def test_the_api_answers_when_the_call_connects_and_earlier_callbacks_are_kept(settings: Settings) -> None:
    with live("fractel", settings) as deployment:
        called = call(
            deployment, campaign_text("fractel"), "+12125550106", Script("answered", ring_seconds=20)
        )
        log = httpx.get(f"{deployment.simulator_url}/_simulator/log").json()
    assert called.attempt.status == "completed" and called.contact.result == "reached"
    begin, end = called.events
    # BEGIN came while the create request was still ringing: it was kept under its call id, then
    # applied to the attempt once the answer named it.
    assert (begin.call_id, end.call_id) == (called.attempt.provider_call_id, None)
    assert [p["call_id"] for p in log["placements"]] == [called.attempt.provider_call_id]
    with db.session_scope(deployment.settings.database_url) as session:
        assert session.exec(select(WebhookEvent).where(col(WebhookEvent.attempt_id).is_(None))).all() == []


@pytest.mark.parametrize("reading", ["201", UNCONNECTED_4XX])
@pytest.mark.parametrize(
    ("script", "outcome"),
    [(Script("busy"), "busy"), (Script("no_answer"), "no_answer"), (Script("rejected"), "rejected")],
)
def test_a_call_that_never_connects_ends_as_it_did_however_the_api_answers(
    settings: Settings, reading: str, script: Script, outcome: str
) -> None:
    """The seed leaves it open whether a call that does not connect is answered 201 (its END
    callback then tells) or 4xx: either way a busy or unanswered callee is retried as such."""
    with live("fractel", settings) as deployment:
        deployment.simulation.readings["unconnected"] = reading
        called = call(deployment, campaign_text("fractel"), "+12125550106", script)
    assert called.attempt.status == outcome
    assert called.contact.state == ("pending" if outcome in ("busy", "no_answer") else "done")
    if reading == UNCONNECTED_4XX:
        assert (called.attempt.reason or "").startswith("Fractel answered 400: The call was not connected:")


# -- against FoneStorm's 2.4 spec -------------------------------------------------------------------


def _form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


@pytest.mark.parametrize(
    ("path", "build"),
    [
        ("/auth", lambda s: fractel.sign_in(s)),
        (
            "/calls/send_notify",
            lambda s: fractel.setup(s, "http://127.0.0.1:9/webhooks/fractel/account", "t", "+14155550100"),
        ),
        ("/calls", lambda s: fractel.build_call(order(question=None), s, "t")),
    ],
)
def test_each_request_is_a_form_with_the_specs_required_fields(
    settings: Settings, path: str, build: Any
) -> None:
    operation = fonestorm_operation(path)
    request = build(settings.fractel)
    assert request.headers["content-type"] == operation["consumes"][0]
    sent = _form(request)
    required = {p["name"] for p in operation["parameters"] if p.get("required")}
    # The seed document renamed the call's content (service_type, service_id replace tts).
    assert required - {"tts"} <= set(sent)
    for parameter in operation["parameters"]:
        if "enum" in parameter and parameter["name"] in sent:
            assert sent[parameter["name"]] in parameter["enum"]


def test_the_simulators_answers_match_the_specs_definitions(settings: Settings) -> None:
    with live("fractel", settings) as deployment, application() as (_, app_url):
        account = deployment.settings.fractel
        with httpx.Client() as http:
            signed = http.send(fractel.sign_in(account))
            token = fractel.parse_sign_in(signed).value
            notify = http.send(fractel.setup(account, f"{app_url}/hook", token, "+14155550100"))
            placed = http.send(fractel.build_call(order(question=None), account, token))
            refused = http.send(fractel.build_call(order(question=None), account, "not-a-token"))
    assert (signed.status_code, notify.status_code, placed.status_code, refused.status_code) == (
        201,
        200,
        201,
        401,
    )
    assert problems(fonestorm_schema("inline_response_201"), signed.json()) == []
    assert problems(fonestorm_schema("inline_response_201_4"), notify.json()) == []
    assert problems(fonestorm_schema("inline_response_201_1"), placed.json()) == []
    assert problems(fonestorm_schema("Error"), refused.json()) == []


@pytest.mark.parametrize("fonenumber", ["14155550100", "415555010", "+1 415 555 0100"])
def test_the_simulator_takes_only_a_10_digit_fonenumber(settings: Settings, fonenumber: str) -> None:
    with live("fractel", settings) as deployment, httpx.Client() as http:
        account = deployment.settings.fractel
        token = fractel.parse_sign_in(http.send(fractel.sign_in(account))).value
        request = fractel.build_call(order(question=None), account, token)
        form = _form(request) | {"fonenumber": fonenumber}
        answer = http.post(request.url, data=form, headers={"token": token})
    assert answer.status_code == 400
    assert answer.json()["message"] == "fonenumber must be one of your FoneNumbers (10 digits)"
