"""The receiver running a call flow: each input taken once, for the question and the segment its
URL names; the same next step for an input sent again; opt-outs on the list before the reply."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import httpx
from sqlmodel import col, select

from dialer import db
from dialer.embedded import BackgroundServer
from dialer.models import Attempt, Contact, DncEntry, DtmfAnswer
from dialer.receiver import create_app
from dialer.settings import Settings
from tests.dialer.factories import campaign_with_contacts, queued_attempts
from tests.e2e import AGENT_ANSWERS, survey_text

PHONE = "+12125550106"


def _survey_attempt(settings: Settings) -> Attempt:
    campaign = campaign_with_contacts(
        settings.database_url,
        [PHONE],
        text=survey_text("vonage"),
        variables={PHONE: {"first_name": "Ada", "agent": AGENT_ANSWERS}},
    )
    return queued_attempts(settings.database_url, campaign, 1)[0]


def _keys(digits: str, *, at: str = "2026-12-04T17:00:00.000Z") -> dict[str, Any]:
    return {
        "dtmf": {"digits": digits, "timed_out": False},
        "uuid": "call-1",
        "conversation_uuid": "CON-1",
        "from": "14155550100",
        "to": "12125550106",
        "timestamp": at,
    }


def _input_url(attempt: Attempt, step: str, seq: int, tries: int = 1) -> str:
    return f"/webhooks/vonage/{attempt.callback_token}/input?step={step}&seq={seq}&try={tries}"


def _answers(settings: Settings) -> list[tuple[str, int, str, bool]]:
    with db.session_scope(settings.database_url) as session:
        rows = session.exec(select(DtmfAnswer).order_by(col(DtmfAnswer.id))).all()
        return [(row.step, row.seq, row.digits, row.valid) for row in rows]


def _attempt_now(settings: Settings, attempt: Attempt) -> Attempt:
    with db.session_scope(settings.database_url) as session:
        found = session.get(Attempt, attempt.id)
        assert found is not None
        return found


def test_an_input_sent_again_gets_the_same_next_step_and_is_taken_once(any_db: Settings) -> None:
    attempt = _survey_attempt(any_db)
    with BackgroundServer(create_app(any_db)) as server, httpx.Client(base_url=server.url) as client:
        first = client.post(_input_url(attempt, "rating", 0), json=_keys("2"))
        again = client.post(_input_url(attempt, "rating", 0), json=_keys("2"))
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    ncco = first.json()
    assert [action["action"] for action in ncco] == ["talk", "input"]  # the branch: what went wrong?
    assert ncco[0]["text"].startswith("What went wrong?")
    assert ncco[1]["eventUrl"] == [f"{any_db.public_url}{_input_url(attempt, 'problem', 1)}"]
    assert _answers(any_db) == [("rating", 0, "2", True)]
    assert _attempt_now(any_db, attempt).step_seq == 1


def test_a_late_input_for_a_question_the_call_has_left_changes_nothing(any_db: Settings) -> None:
    attempt = _survey_attempt(any_db)
    with BackgroundServer(create_app(any_db)) as server, httpx.Client(base_url=server.url) as client:
        assert client.post(_input_url(attempt, "rating", 0), json=_keys("2")).status_code == 200
        late = client.post(_input_url(attempt, "rating", 0), json=_keys("1", at="2026-12-04T17:00:09.000Z"))
        answered = client.post(_input_url(attempt, "problem", 1), json=_keys("3"))
    assert late.status_code == 204  # neither a second answer nor a second step
    assert answered.status_code == 200 and answered.json()[0]["text"].startswith("Would you recommend")
    assert _answers(any_db) == [("rating", 0, "2", True), ("problem", 1, "3", True)]
    assert _attempt_now(any_db, attempt).step_seq == 2


def test_two_inputs_for_one_question_at_once_advance_the_call_once(any_db: Settings) -> None:
    # Two receivers (two processes of `dialer serve`), each given another input for the same
    # question at the same moment: one moves the call on, the other changes nothing.
    attempt = _survey_attempt(any_db)
    url = _input_url(attempt, "rating", 0)
    with (
        BackgroundServer(create_app(any_db)) as one,
        BackgroundServer(create_app(any_db)) as two,
        ThreadPoolExecutor(2) as pool,
    ):
        sent = [(one, _keys("0")), (two, _keys("9", at="2026-12-04T17:00:01.000Z"))]
        answers = list(pool.map(lambda each: httpx.post(f"{each[0].url}{url}", json=each[1]), sent))
    assert sorted(answer.status_code for answer in answers) == [200, 204]
    kept = _answers(any_db)
    assert len(kept) == 1 and kept[0][:2] == ("rating", 0)
    row = _attempt_now(any_db, attempt)
    assert row.step_seq == 1
    # Whichever won did its action, and only it: a transfer, or an opt-out.
    assert (row.transfer_to is not None) != row.opted_out
    assert row.transfer_to in (None, AGENT_ANSWERS)


def test_an_opt_out_is_on_the_do_not_call_list_before_the_reply_leaves(any_db: Settings) -> None:
    attempt = _survey_attempt(any_db)
    with BackgroundServer(create_app(any_db)) as server:
        reply = httpx.post(f"{server.url}{_input_url(attempt, 'rating', 0)}", json=_keys("9"))
        # The reply is in our hands: the number must already be on the list, committed.
        with db.session_scope(any_db.database_url) as session:
            listed = session.exec(select(DncEntry)).all()
    assert reply.json() == [
        {"action": "talk", "text": "You will not be called again. Goodbye.", "language": "en-US"}
    ]
    assert [(entry.phone, entry.campaign_id) for entry in listed] == [(PHONE, None)]
    assert _attempt_now(any_db, attempt).opted_out


def test_a_transfers_leg_is_kept_on_the_attempt_and_only_moves_forward(settings: Settings) -> None:
    attempt = _survey_attempt(settings)
    leg = {"uuid": "leg-1", "conversation_uuid": "CON-1", "to": "12125550198", "direction": "outbound"}
    transfer = f"/webhooks/vonage/{attempt.callback_token}/transfer?step=agent&seq=1"
    with BackgroundServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as client:
        connect = client.post(_input_url(attempt, "rating", 0), json=_keys("0")).json()
        for status, extra in [("ringing", {}), ("answered", {}), ("completed", {"duration": "42"})]:
            assert client.post(transfer, json=leg | {"status": status} | extra).status_code == 204
        assert client.post(transfer, json=leg | {"status": "ringing"}).status_code == 204  # late
    assert connect[-1]["action"] == "connect"
    assert connect[-1]["endpoint"] == [{"type": "phone", "number": "12125550198"}]
    row = _attempt_now(settings, attempt)
    assert (row.transfer_to, row.transfer_status, row.transfer_seconds) == (AGENT_ANSWERS, "answered", 42)
    assert row.provider_call_id == "call-1"  # the leg's own uuid did not take the call's place


def test_a_recording_is_kept_as_its_steps_answer(settings: Settings) -> None:
    text = (resources.files("dialer") / "examples" / "survey.toml").read_text()  # it records comments
    campaign = campaign_with_contacts(settings.database_url, [PHONE], text=text, name="patient-survey")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    url = f"/webhooks/vonage/{attempt.callback_token}/record?step=comment&seq=2"
    recorded = {
        "recording_url": "https://api.nexmo.com/v1/files/aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "size": 12345,
        "conversation_uuid": "CON-1",
        "timestamp": "2026-12-04T17:00:00.000Z",
    }
    with BackgroundServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as client:
        not_a_recorder = client.post(url.replace("comment", "rating"), json=recorded)
        assert client.post(url, json=recorded).status_code == 204
    assert not_a_recorder.status_code == 400
    with db.session_scope(settings.database_url) as session:
        (answer,) = session.exec(select(DtmfAnswer)).all()
        contact = session.get(Contact, attempt.contact_id)
    assert (answer.step, answer.recording, answer.valid) == ("comment", recorded["recording_url"], True)
    assert contact is not None
