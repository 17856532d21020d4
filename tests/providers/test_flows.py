"""Call flows end to end, through each provider that can run them: its simulator over HTTP, our
receiver and the database. A survey of three questions with a branch, an opt-out and a transfer
on Vonage and Routee; what CM.com, Cequens and Fractel can run of a flow on theirs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlmodel import col, select

from campaigns.outcomes import AttemptStatus
from dialer import db
from dialer.cli import main
from dialer.dispatch import place_call
from dialer.models import Attempt, Contact, DncEntry, DtmfAnswer
from dialer.settings import Settings
from dialer.simulators.base import Script
from dialer.simulators.routee import WHOLE_CALL
from tests.dialer.factories import campaign_with_contacts, queued_attempts
from tests.e2e import AGENT_ANSWERS, AGENT_BUSY, survey_text
from tests.providers.live import Live, live, when_done


@dataclass(frozen=True)
class Callee:
    """A callee of the survey: how they behave, and what the dialer must make of it."""

    script: Script
    answers: dict[str, tuple[str, str | None, bool]]
    """The last answer kept for each step: keys, choice, valid."""
    result: str
    agent: str = AGENT_ANSWERS
    transfer: str | None = None
    """How the transfer's leg ended (None: no transfer)."""


CALLEES = {
    "+12125550111": Callee(
        Script("answered", answers=("1", "1")),
        {"rating": ("1", "good", True), "recommend": ("1", "yes", True)},
        "dtmf_answered",
    ),
    "+12125550112": Callee(  # the branch: a poor visit is asked what went wrong
        Script("answered", answers=("2", "3", "2")),
        {"rating": ("2", "poor", True), "problem": ("3", "cost", True), "recommend": ("2", "no", True)},
        "dtmf_answered",
    ),
    "+12125550113": Callee(Script("answered", answers=("9",)), {"rating": ("9", None, True)}, "opted_out"),
    "+12125550114": Callee(
        Script("answered", answers=("0",)),
        {"rating": ("0", None, True)},
        "dtmf_answered",
        transfer="answered",
    ),
    "+12125550115": Callee(
        Script("answered", answers=("0",)),
        {"rating": ("0", None, True)},
        "dtmf_answered",
        agent=AGENT_BUSY,
        transfer="busy",
    ),
    "+12125550116": Callee(  # silence, asked again, silence: on to goodbye
        Script("answered", answers=("", "")), {"rating": ("", None, False)}, "reached"
    ),
    "+12125550117": Callee(  # hangs up while the second question is asked
        Script("answered", answers=("2", "1"), hangs_up_at=2),
        {"rating": ("2", "poor", True)},
        "dtmf_answered",
    ),
    "+12125550118": Callee(  # star: the question again, then an answer
        Script("answered", answers=("1", "*", "2")),
        {"rating": ("1", "good", True), "recommend": ("2", "no", True)},
        "dtmf_answered",
    ),
}


@pytest.fixture(params=["vonage", "routee", "routee, each post all the call's tones"])
def deployment(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Live]:
    provider, _, reading = str(request.param).partition(", ")
    if reading:  # the other reading of Routee's COLLECT posts, and the account set to it
        settings = settings.model_copy(
            update={"routee": settings.routee.model_copy(update={"collected_tones": WHOLE_CALL})}
        )
    with live(provider, settings, time_scale=0.02) as running:
        if reading:
            running.simulation.readings["tones"] = WHOLE_CALL
        yield running


def run_survey(deployment: Live, provider: str) -> list[tuple[Contact, list[Attempt], list[DtmfAnswer]]]:
    """Call every callee of :data:`CALLEES` once, as workers would, and wait for every call to end."""
    url = deployment.settings.database_url
    deployment.simulation.scripts.update({phone: callee.script for phone, callee in CALLEES.items()})
    variables = {phone: {"first_name": "Ada", "agent": callee.agent} for phone, callee in CALLEES.items()}
    campaign = campaign_with_contacts(url, list(CALLEES), text=survey_text(provider), variables=variables)
    for attempt in queued_attempts(url, campaign, len(CALLEES)):
        place_call(deployment.runtime, attempt.id or 0)
    deadline = time.monotonic() + 30
    while True:
        with db.session_scope(url) as session:
            contacts = session.exec(select(Contact).order_by(col(Contact.id))).all()
            if all(contact.state == "done" for contact in contacts):
                break
        assert time.monotonic() < deadline, [(c.phone, c.state) for c in contacts]
        time.sleep(0.05)
    time.sleep(0.3)  # a transfer's last leg event, and Routee's tones, may come after the call's end
    with db.session_scope(url) as session:
        found = []
        for contact in session.exec(select(Contact).order_by(col(Contact.id))).all():
            attempts = session.exec(select(Attempt).where(col(Attempt.contact_id) == contact.id)).all()
            answers = session.exec(
                select(DtmfAnswer)
                .where(col(DtmfAnswer.contact_id) == contact.id)
                .order_by(col(DtmfAnswer.id))
            ).all()
            found.append((contact, list(attempts), list(answers)))
        return found


def test_a_survey_with_a_branch_an_opt_out_and_a_transfer_runs_end_to_end(
    deployment: Live, tmp_path: Path
) -> None:
    provider = deployment.simulation.provider
    url = deployment.settings.database_url
    for contact, attempts, answers in run_survey(deployment, provider):
        callee = CALLEES[contact.phone]
        (attempt,) = attempts  # nobody is called twice: every call completes
        assert attempt.status == AttemptStatus.COMPLETED, contact.phone
        expected = dict(callee.answers)
        if provider == "routee" and callee.answers.get("rating") == ("", None, False):
            expected = {}  # silence posts nothing to Routee's collector: no answer arrives
        last = {answer.step: (answer.digits, answer.choice, answer.valid) for answer in answers}
        assert last == expected, contact.phone
        assert contact.result == callee.result, contact.phone
        assert attempt.opted_out == (callee.result == "opted_out")
        assert attempt.transfer_status == callee.transfer, contact.phone
        assert attempt.transfer_to == (callee.agent if callee.transfer else None)
        if callee.transfer == "answered":
            assert attempt.transfer_seconds == 8  # the simulated person talks eight seconds
    with db.session_scope(url) as session:
        dnc = session.exec(select(DncEntry)).all()
    assert [(entry.phone, entry.campaign_id) for entry in dnc] == [("+12125550113", None)]
    assert (dnc[0].source or "").startswith("key 9, step stop, campaign e2e, attempt ")
    log = httpx.get(f"{deployment.simulator_url}/_simulator/log").json()
    assert sorted(p["to"] for p in log["placements"]) == sorted(CALLEES)  # each callee once
    assert sorted(leg["to"] for leg in log["legs"]) == [AGENT_BUSY, AGENT_ANSWERS]  # each transfer once
    _results_through_the_cli(url, provider, tmp_path)


def _results_through_the_cli(url: str, provider: str, directory: Path) -> None:
    """The survey's export (a column per question, the opt-out, the transfer), its report (each
    question's answers, the funnel) and the do-not-call list, as the operator gets them."""
    env = {"DIALER_DATABASE_URL": url}
    exported = directory / "results.csv"
    result = CliRunner().invoke(main, ["export", "e2e", "--out", str(exported)], env=env)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(exported, dtype=str, keep_default_na=False).set_index("phone")
    assert list(rows.columns[-8:]) == [
        "rating",
        "problem",
        "recommend",
        "opted_out",
        "transferred",
        "transfer_to",
        "transfer_outcome",
        "transfer_seconds",
    ]
    poor = rows.loc["+12125550112"]
    assert (poor["rating"], poor["problem"], poor["recommend"]) == ("poor", "cost", "no")
    assert (poor["opted_out"], poor["transferred"]) == ("false", "false")
    assert (
        rows.loc["+12125550113", "opted_out"] == "true" and rows.loc["+12125550113", "result"] == "opted_out"
    )
    busy = rows.loc["+12125550115"]
    assert (busy["transferred"], busy["transfer_to"], busy["transfer_outcome"]) == (
        "true",
        AGENT_BUSY,
        "busy",
    )
    answered = rows.loc["+12125550114"]
    assert (answered["transfer_outcome"], answered["transfer_seconds"]) == ("answered", "8")
    page = directory / "report.html"
    result = CliRunner().invoke(main, ["report", "e2e", "--html", str(page)], env=env)
    assert result.exit_code == 0, result.output
    lines = {re.sub(r"[\s│]+", " ", line).strip() for line in result.output.splitlines()}
    assert {
        "answers to rating",
        "poor 2",
        "good 2",
        "answered the call 8",
        "transferred 2",
        "opted out 1",
    } <= lines
    text = page.read_text()
    assert "From the answer to the end of the call" in text and "Answers to problem" in text
    listed = CliRunner().invoke(main, ["dnc", "list"], env=env).output
    assert "+12125550113" in listed and "key 9, step stop" in listed


ONE_QUESTION = """
name = "e2e"
provider = "{provider}"
caller_id = "+14155550100"

[flow.steps.remind]
say = "Hello {{first_name}}, your appointment is tomorrow at ten."
next = "confirm"

[flow.steps.confirm]
say = "Press 1 to confirm or 2 to cancel. To stop these calls, press 9."
choices = {{ "1" = "confirm", "2" = "cancel" }}
on = {{ "9" = "stop" }}
{closing}
[flow.steps.stop]
{stop_says}action = "optout"
scope = "campaign"
"""
"""One question, whose answer the provider reports when the call is over: every answer ends
the call with the same closing message (CM.com says it; Cequens says nothing after the answer)."""

CM_CLOSING = """next = "thanks"
attempts = 2
retry = "Sorry, please press 1, 2 or 9."
no_input = "thanks"
invalid = "thanks"

[flow.steps.thanks]
say = "Thank you."
"""


@pytest.mark.parametrize("provider", ["cm", "cequens"])
def test_one_question_with_an_opt_out_runs_where_the_provider_reports_the_answer_at_the_end(
    settings: Settings, provider: str
) -> None:
    text = ONE_QUESTION.format(
        provider=provider,
        closing=CM_CLOSING if provider == "cm" else "",
        stop_says='say = "Thank you."\n' if provider == "cm" else "",
    )
    callees = {
        "+12125550121": (Script("answered", answers=("1",)), ("1", "confirm", True), "dtmf_answered"),
        "+12125550122": (Script("answered", answers=("9",)), ("9", None, True), "opted_out"),
    }
    with live(provider, settings, time_scale=0.02) as deployment:
        url = deployment.settings.database_url
        deployment.simulation.scripts.update({phone: script for phone, (script, _, _) in callees.items()})
        campaign = campaign_with_contacts(url, list(callees), text=text, provider=provider)
        for attempt in queued_attempts(url, campaign, len(callees)):
            place_call(deployment.runtime, attempt.id or 0)
        found = when_done(url)
        if provider == "cm":
            sent = httpx.get(f"{deployment.simulator_url}/_simulator/log").json()
            assert len(sent["placements"]) == 2
    for contact, answers in found:
        _, answer, result = callees[contact.phone]
        assert [(a.step, a.digits, a.choice, a.valid) for a in answers] == [("confirm", *answer)]
        assert contact.result == result
    with db.session_scope(url) as session:
        listed = session.exec(select(DncEntry)).all()
    assert [(entry.phone, entry.campaign_id) for entry in listed] == [("+12125550122", campaign.id)]


def test_fractel_connects_the_callee_to_a_number_as_the_calls_one_destination(settings: Settings) -> None:
    text = """
name = "e2e"
provider = "fractel"
caller_id = "+14155550100"

[flow.steps.connect]
action = "transfer"
to_column = "agent"
"""
    with live("fractel", settings, time_scale=0.02) as deployment:
        url = deployment.settings.database_url
        variables = {"+12125550136": {"agent": AGENT_ANSWERS}}
        campaign = campaign_with_contacts(
            url, list(variables), text=text, provider="fractel", variables=variables
        )
        (attempt,) = queued_attempts(url, campaign, 1)
        place_call(deployment.runtime, attempt.id or 0)
        ((contact, _),) = when_done(url)
        legs = httpx.get(f"{deployment.simulator_url}/_simulator/log").json()["legs"]
    assert [leg["to"] for leg in legs] == [AGENT_ANSWERS]
    assert contact.result == "reached"
    with db.session_scope(url) as session:
        row = session.get(Attempt, attempt.id)
    assert row is not None and (row.status, row.transfer_to) == ("completed", AGENT_ANSWERS)
