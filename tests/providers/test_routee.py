"""Routee as its documents describe it: dial plans that wait for an answer, tones that arrive in
pieces, a balance that runs out, and the conversation tracking page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlmodel import select

from campaigns.flow import judge
from dialer import db
from dialer.models import Campaign
from dialer.providers import routee
from dialer.providers.client import ProviderClient
from dialer.settings import RouteeSettings, Settings
from dialer.simulators.base import Script
from dialer.simulators.routee import SINCE_LAST_POST, WHOLE_CALL
from tests.dialer.factories import campaign_with_contacts
from tests.providers.live import Live, call, live
from tests.providers.test_vonage import order
from tests.simulators.callbacks import application

CODE_QUESTION = """
name = "e2e"
provider = "routee"
caller_id = "+14155550100"

[message]
text = "Hello {{first_name}}."

[question]
prompt = "Please enter your two-digit code."
min_digits = 2
max_digits = 2
pattern = "[0-9]{{2}}"
timeout = "3s"
terminator = "{terminator}"

[window]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
"""
PHONE = "+12125550106"


@pytest.fixture
def routee_live(settings: Settings) -> Any:
    with live("routee", settings) as deployment:
        yield deployment


def test_the_dial_plan_waits_for_the_answer_and_collects_it() -> None:
    request = routee.build_call(order(), RouteeSettings(), "token")
    verbs = json.loads(request.content)["dialPlan"]["verbs"]
    # The question is said twice (a key pressed while it plays is posted at once), then silence
    # goes on to what the question's no_input leads to: the final prompt.
    assert [verb["type"] for verb in verbs] == ["SAY", "SAY", "SAY", "SAY", "PAUSE", "COLLECT", "SAY"]
    assert verbs[1] == verbs[3] and verbs[1]["bargeIn"] is True and "bargeIn" not in verbs[0]
    assert verbs[2]["message"]["text"] == "Sorry, that was not a valid choice." and verbs[2]["bargeIn"]
    assert verbs[6]["message"]["text"] == "Thank you. Goodbye." and "bargeIn" not in verbs[6]
    assert verbs[4] == {"type": "PAUSE", "duration": 5}  # the question's timeout, for its one digit
    assert verbs[5] == {
        "type": "COLLECT",
        "eventUrl": "http://127.0.0.1:9/webhooks/vonage/TOKEN/collect?step=question&seq=0&try=1",
        "maxDigits": 1,
        "submitOnHash": True,
    }


@pytest.mark.parametrize(("barge", "posted"), [(False, []), (True, ["1"])])
def test_the_old_dial_plan_loses_a_two_digit_answer(
    routee_live: Live, barge: bool, posted: list[str]
) -> None:
    """The plan we used to build (no PAUSE: the call ends after the prompt) gets at most the key
    that interrupted the prompt."""
    routee_live.simulation.scripts[PHONE] = Script("answered", "12", barge=barge)
    with application() as (stand_in, app_url):
        old_plan = {
            "verbs": [
                {"type": "SAY", "message": {"text": "Hello Ada.", "language": "en-US"}},
                {"type": "SAY", "message": {"text": "Your code?", "language": "en-US"}, "bargeIn": True},
                {"type": "COLLECT", "eventUrl": f"{app_url}/collect", "maxDigits": 2, "submitOnHash": True},
            ]
        }
        body = {
            "from": "+14155550100",
            "to": {"phone": PHONE},
            "dialPlan": old_plan,
            "callback": {"url": f"{app_url}/status", "strategy": "OnCompletion"},
        }
        with httpx.Client(base_url=routee_live.simulator_url) as http:
            token = http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=_credentials(routee_live)
            )
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            assert http.post("/voice/conversation", json=body, headers=headers).status_code == 200
        stand_in.wait_for(lambda: stand_in.on("/status"))
    assert [received.json()["collectedTones"] for received in stand_in.on("/collect")] == posted


def _credentials(deployment: Live) -> tuple[str, str]:
    account = deployment.settings.routee
    assert account.application_secret is not None
    return account.application_id, account.application_secret.get_secret_value()


@pytest.mark.parametrize(
    ("keys", "barge", "terminator"),
    [
        ("12", True, ""),  # "1" interrupts the prompt, "2" comes when the call ends
        ("12", False, ""),  # both during the pause, posted when the call ends
        ("12#", False, "#"),  # posted on '#'
        ("12#", True, "#"),  # "1" interrupts the prompt, "2" comes on '#'
    ],
)
@pytest.mark.parametrize("reading", [SINCE_LAST_POST, WHOLE_CALL])
def test_a_two_digit_answer_is_recorded_whole_however_its_tones_arrive(
    settings: Settings, keys: str, barge: bool, terminator: str, reading: str
) -> None:
    """Under either reading of what a COLLECT post carries, with the account's setting saying which."""
    text = CODE_QUESTION.format(terminator=terminator)
    with read_as(settings, reading, reading) as deployment:
        called = call(deployment, text, PHONE, Script("answered", keys, barge=barge))
    assert called.attempt.status == "completed"
    assert called.answer is not None and (called.answer.digits, called.answer.valid) == ("12", True)
    assert called.contact.result == "dtmf_answered"


def test_posts_that_repeat_every_tone_read_as_pieces_double_the_first(settings: Settings) -> None:
    """The setting matters: posts carrying every tone of the call, read as pieces, record a barged-in
    12# as 112 (the misreading the second pass found)."""
    with read_as(settings, WHOLE_CALL, SINCE_LAST_POST) as deployment:
        called = call(
            deployment, CODE_QUESTION.format(terminator="#"), PHONE, Script("answered", "12#", barge=True)
        )
    assert called.answer is not None and called.answer.digits == "112"


@contextmanager
def read_as(settings: Settings, simulated: str, configured: str) -> Iterator[Live]:
    """Routee's simulator posting tones as ``simulated`` reads the documents, and our account set
    to read them as ``configured``."""
    account = settings.routee.model_copy(update={"collected_tones": configured})
    with live("routee", settings.model_copy(update={"routee": account})) as deployment:
        deployment.simulation.readings["tones"] = simulated
        yield deployment


def test_a_balance_that_ran_out_pauses_every_campaign_on_the_account(routee_live: Live) -> None:
    url = routee_live.settings.database_url
    routee_live.simulation.balance = 0
    text = CODE_QUESTION.format(terminator="#")
    campaign_with_contacts(url, ["+12125550107"], text=text, name="other")
    called = call(routee_live, text, PHONE)
    assert called.attempt.status == "failed"
    assert "balance ran out (Unsent)" in (called.attempt.reason or "")
    assert (called.contact.state, called.contact.result) == ("pending", None)  # called again on resume
    with db.session_scope(url) as session:
        campaigns = session.exec(select(Campaign)).all()
    assert {campaign.status for campaign in campaigns} == {"paused"}
    assert all("Routee: the account's balance ran out" in (c.reason or "") for c in campaigns)


def test_a_machine_is_hung_up_on_when_the_campaign_says_so(routee_live: Live) -> None:
    text = CODE_QUESTION.format(terminator="#") + '\n[call]\non_machine = "hangup"\n'
    called = call(routee_live, text, PHONE, Script("machine"))
    assert called.attempt.status == "completed" and called.answer is None
    with httpx.Client() as http:
        client = ProviderClient(http)
        placed = httpx.get(f"{routee_live.simulator_url}/_simulator/log").json()["placements"]
        assert len(placed) == 1
        event = client.look_up(
            routee.PROVIDER, routee_live.settings.routee, called.attempt.provider_call_id or ""
        )
    assert event.answered_by == "machine"  # the tracking page says who answered


def test_every_say_of_the_call_and_of_its_replies_keeps_the_voice() -> None:
    call = order(voice="male", language="de-DE")
    plan = json.loads(routee.build_call(call, RouteeSettings(), "token").content)["dialPlan"]
    again = judge(call.flow, "question", "3", tries=1).then  # a wrong key: asked again
    thanks = judge(call.flow, "question", "1", tries=1).then
    assert again is not None and thanks is not None
    replies = [routee.dial_plan(again, call, 1), routee.dial_plan(thanks, call, 2)]
    says = [verb for each in [plan, *replies] for verb in each["verbs"] if verb["type"] == "SAY"]
    assert len(says) >= 6
    assert {(say["message"]["gender"], say["message"]["language"]) for say in says} == {("male", "de-DE")}
