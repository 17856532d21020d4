"""The receiver as deployed (its ASGI app over HTTP): how each provider's callbacks are taken."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlmodel import col, select

from dialer import db
from dialer.embedded import BackgroundServer, loopback_socket
from dialer.errors import WebhookAuthError
from dialer.models import Attempt, Contact, DtmfAnswer, WebhookEvent, utcnow
from dialer.providers import vonage
from dialer.providers.base import Webhook
from dialer.receiver import _first_presses, create_app
from dialer.recorder import Received
from dialer.settings import Settings
from dialer.simulators.vonage import sign_webhook
from tests.dialer.factories import campaign_with_contacts, queued_attempts

EVENT = {"uuid": "call-1", "status": "answered", "from": "14155550100", "to": "12125550106"}


@contextmanager
def receiver(settings: Settings) -> Iterator[httpx.Client]:
    """``dialer serve``'s app on a loopback port, and a client for it."""
    with BackgroundServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as client:
        yield client


def _attempt(settings: Settings) -> Attempt:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    return queued_attempts(settings.database_url, campaign, 1)[0]


def _stored(settings: Settings) -> list[WebhookEvent]:
    with db.session_scope(settings.database_url) as session:
        return list(session.exec(select(WebhookEvent)).all())


def test_an_unsigned_vonage_callback_is_recorded_on_its_token(settings: Settings) -> None:
    attempt = _attempt(settings)
    with receiver(settings) as client:
        answer = client.post(f"/webhooks/vonage/{attempt.callback_token}/event", json=EVENT)
        forged = client.post("/webhooks/vonage/not-a-token/event", json=EVENT)
    assert (answer.status_code, forged.status_code) == (204, 401)
    assert [event.attempt_id for event in _stored(settings)] == [attempt.id]


def test_with_signatures_required_an_unsigned_one_gets_a_503_and_a_signed_one_is_recorded(
    settings: Settings,
) -> None:
    attempt = _attempt(settings)
    required = settings.model_copy(
        update={"vonage": settings.vonage.model_copy(update={"require_signature": True})}
    )
    assert required.vonage.signature_secret is not None and required.vonage.api_key
    body = json.dumps(EVENT).encode()
    token = sign_webhook(
        body, secret=required.vonage.signature_secret.get_secret_value(), api_key=required.vonage.api_key
    )
    url = f"/webhooks/vonage/{attempt.callback_token}/event"
    with receiver(required) as client:
        unsigned = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 503  # Vonage sends it again
        assert _stored(settings) == []
        signed = client.post(url, content=body, headers={"Authorization": f"Bearer {token}"})
    assert signed.status_code == 204
    assert len(_stored(settings)) == 1


def test_a_cm_callback_with_an_alphanumeric_sip_code_is_taken(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"], provider="cm", name="cm")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    body = {
        "type": "dtmf-finished",
        "call-id": "c-1",
        "result": {"code": 11, "description": "failed", "sip-disconnect-code": "BYE"},
    }
    with receiver(settings) as client:
        answer = client.post(f"/webhooks/cm/{attempt.callback_token}/callback", json=body)
    assert answer.status_code == 204
    with db.session_scope(settings.database_url) as session:
        stored = session.get(Attempt, attempt.id)
    assert stored is not None and (stored.status, stored.reason) == ("failed", "failed (SIP BYE)")


# -- issue: the receiver holds against hostile and broken callbacks --------------------------------


def _row(settings: Settings, attempt: Attempt) -> Attempt:
    with db.session_scope(settings.database_url) as session:
        row = session.get(Attempt, attempt.id)
        assert row is not None
        return row


def test_a_body_bigger_than_any_callback_is_refused_before_it_is_read(settings: Settings) -> None:
    attempt = _attempt(settings)
    url = f"/webhooks/vonage/{attempt.callback_token}/event"
    padded = json.dumps(EVENT | {"padding": "x" * 70_000}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only while reading
        for start in range(0, len(padded), 8192):
            yield padded[start : start + 8192]

    with receiver(settings) as client:
        declared = client.post(url, content=padded, headers={"Content-Type": "application/json"})
        streamed = client.post(url, content=chunks(), headers={"Content-Type": "application/json"})
        normal = client.post(url, json=EVENT)
    assert (declared.status_code, streamed.status_code, normal.status_code) == (413, 413, 204)
    assert "at most 65536 bytes" in declared.text
    assert [json.loads(event.payload) for event in _stored(settings)] == [EVENT]


def test_the_log_names_the_route_never_the_token(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    attempt = _attempt(settings)
    caplog.set_level("INFO", logger="dialer.receiver")
    with receiver(settings) as client:
        client.post(f"/webhooks/vonage/{attempt.callback_token}/event", json=EVENT)
        client.post(f"/webhooks/vonage/{attempt.callback_token}/event", json={"status": "dancing"})
    assert "POST /webhooks/vonage/…/event 204" in caplog.text
    assert "POST /webhooks/vonage/…/event 400" in caplog.text
    assert attempt.callback_token not in caplog.text


def test_dialer_serve_writes_no_token_in_its_log(settings: Settings, tmp_path: Path) -> None:
    attempt = _attempt(settings)
    with loopback_socket() as free:
        port = free.getsockname()[1]
    env = os.environ | {"DIALER_DATABASE_URL": settings.database_url, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "dialer", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as server:
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "dialer serve did not start"
                    time.sleep(0.1)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/webhooks/vonage/{attempt.callback_token}/event", json=EVENT
            )
            assert answer.status_code == 204
        finally:
            server.send_signal(signal.SIGINT)
            output, _ = server.communicate(timeout=20)
    assert "POST /webhooks/vonage/…/event 204" in output
    assert attempt.callback_token not in output


def test_a_token_lapses_once_its_call_has_long_ended(settings: Settings) -> None:
    attempt = _attempt(settings)
    with db.session_scope(settings.database_url) as session:
        session.execute(
            sa.update(Attempt)
            .where(col(Attempt.id) == attempt.id)
            .values(status="completed", provider_call_id="call-1", ended_at=utcnow() - timedelta(hours=2))
        )
    with receiver(settings) as client:
        late = client.post(
            f"/webhooks/vonage/{attempt.callback_token}/event", json=EVENT | {"status": "completed"}
        )
    assert late.status_code == 401
    assert _stored(settings) == []


def test_a_finished_calls_figures_are_never_rewritten(any_db: Settings) -> None:
    attempt = _attempt(any_db)
    url = f"/webhooks/vonage/{attempt.callback_token}/event"
    with receiver(any_db) as client:
        client.post(url, json=EVENT)
        client.post(url, json=EVENT | {"status": "completed", "duration": "30", "price": "0.01"})
        again = client.post(url, json=EVENT | {"status": "completed", "duration": "86400", "price": "99"})
        late = client.post(url, json={"call_uuid": "call-1", "status": "machine"})
    assert (again.status_code, late.status_code) == (204, 204)  # taken, and changing nothing
    row = _row(any_db, attempt)
    assert (row.status, row.duration, row.price, row.answered_by) == ("completed", 30, "0.01", None)


def test_racing_final_events_leave_the_figures_of_the_one_that_won(any_db: Settings) -> None:
    attempts = [_attempt_for(any_db, f"+1212555{n:04d}") for n in range(12)]
    with receiver(any_db) as client, ThreadPoolExecutor(8) as pool:
        futures = []
        for attempt in attempts:
            url = f"/webhooks/vonage/{attempt.callback_token}/event"
            own = EVENT | {"uuid": f"call-{attempt.id}"}
            busy = own | {"status": "busy"}
            completed = own | {"status": "completed", "duration": "45", "price": "0.02"}
            futures += [pool.submit(client.post, url, json=body) for body in (busy, completed)]
        assert {future.result().status_code for future in futures} == {204}
    for attempt in attempts:
        row = _row(any_db, attempt)
        figures = (row.duration, row.price)
        assert figures == ((45, "0.02") if row.status == "completed" else (None, None)), row.status


def _attempt_for(settings: Settings, phone: str) -> Attempt:
    campaign = campaign_with_contacts(settings.database_url, [phone], name=f"c{phone[-4:]}")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    return attempt


@pytest.mark.parametrize(
    ("provider", "kind", "body", "reason"),
    [
        ("vonage", "event", {"status": "completed", "price": "abc"}, "price"),
        ("vonage", "event", {"status": "completed", "price": "12345678901"}, "price"),
        ("vonage", "event", {"status": "completed", "duration": "-5"}, "duration"),
        ("vonage", "event", {"status": "completed", "duration": "1e12"}, "duration"),
        ("vonage", "event", {"status": "completed", "duration": "ten"}, "duration"),
        ("vonage", "input", {"dtmf": {"digits": "1" * 10_000}}, "dtmf.digits"),
        ("vonage", "input", {"dtmf": {"digits": "1\x00"}}, "dtmf.digits"),
        ("routee", "status", {"status": {"name": "Completed"}, "price": "abc"}, "price"),
        ("cm", "callback", {"result": {"code": 10}, "digits": "1\x00"}, "digits"),
    ],
)
def test_a_value_no_provider_sends_gets_400_with_the_reason_and_is_not_stored(
    any_db: Settings, provider: str, kind: str, body: dict[str, object], reason: str
) -> None:
    campaign = campaign_with_contacts(any_db.database_url, ["+12125550106"], provider=provider, name=provider)
    (attempt,) = queued_attempts(any_db.database_url, campaign, 1)
    with receiver(any_db) as client:
        answer = client.post(f"/webhooks/{provider}/{attempt.callback_token}/{kind}", json=body)
    assert answer.status_code == 400 and f": {reason}:" in answer.text
    assert _stored(any_db) == []
    assert _row(any_db, attempt).status == "queued"


def test_malformed_requests_get_a_4xx_never_a_500(settings: Settings) -> None:
    attempts = {
        name: queued_attempts(
            settings.database_url,
            campaign_with_contacts(settings.database_url, ["+12125550106"], provider=name, name=name),
            1,
        )[0]
        for name in ("vonage", "cm", "routee", "cequens")
    }
    deep = b'{"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # within the size limit
    with receiver(settings) as client:
        answers = [
            client.post(f"/webhooks/{name}/{attempt.callback_token}/{kind}", content=deep)
            for (name, attempt), kind in zip(
                attempts.items(), ("event", "callback", "status", "status"), strict=True
            )
        ]
        answers.append(client.post("/webhooks/cm/forged/callback", content=deep))
        answers.append(
            client.post(
                f"/webhooks/vonage/{attempts['vonage'].callback_token}/event",
                content=json.dumps(EVENT).encode("utf-16"),
            )
        )
        answers.append(
            client.post(
                "/webhooks/fractel/account/event",
                json={"uid": "x", "status": "BEGIN"},
                headers={"Authorization": "Basic ĉu-ne-ASCII".encode()},
            )
        )
    assert [answer.status_code for answer in answers] == [400, 400, 400, 400, 401, 400, 401]
    assert _stored(settings) == []


def test_an_event_about_another_call_is_refused(any_db: Settings) -> None:
    first = _attempt_for(any_db, "+12125550106")
    second = _attempt_for(any_db, "+12125550107")
    with receiver(any_db) as client:
        own = client.post(f"/webhooks/vonage/{first.callback_token}/event", json=EVENT)  # binds call-1
        other = client.post(f"/webhooks/vonage/{first.callback_token}/event", json=EVENT | {"uuid": "call-2"})
        # An attempt left "unknown" whose events carry another attempt's call id (a UniqueViolation
        # on PostgreSQL before): refused, on every retry.
        stolen = [
            client.post(f"/webhooks/vonage/{second.callback_token}/event", json=EVENT) for _ in range(2)
        ]
    assert (own.status_code, other.status_code, [s.status_code for s in stolen]) == (204, 401, [401, 401])
    assert _row(any_db, second).provider_call_id is None
    assert [event.attempt_id for event in _stored(any_db)] == [first.id]


def test_a_signed_callback_replayed_to_another_attempts_url_is_refused(settings: Settings) -> None:
    first, second = _attempt_for(settings, "+12125550106"), _attempt_for(settings, "+12125550107")
    with db.session_scope(settings.database_url) as session:
        session.execute(
            sa.update(Attempt).where(col(Attempt.id) == second.id).values(provider_call_id="call-2")
        )
    assert settings.vonage.signature_secret is not None and settings.vonage.api_key
    body = json.dumps(EVENT).encode()
    signed = {
        "Authorization": "Bearer "
        + sign_webhook(
            body, secret=settings.vonage.signature_secret.get_secret_value(), api_key=settings.vonage.api_key
        ),
        "Content-Type": "application/json",
    }
    with receiver(settings) as client:
        genuine = client.post(f"/webhooks/vonage/{first.callback_token}/event", content=body, headers=signed)
        replayed = client.post(
            f"/webhooks/vonage/{second.callback_token}/event", content=body, headers=signed
        )
    assert (genuine.status_code, replayed.status_code) == (204, 401)


def test_dtmf_is_taken_only_from_an_answered_call(settings: Settings) -> None:
    busy, ended, live = (_attempt_for(settings, f"+1212555010{n}") for n in (6, 7, 8))
    with db.session_scope(settings.database_url) as session:
        session.execute(
            sa.update(Attempt).where(col(Attempt.id) == busy.id).values(status="busy", ended_at=utcnow())
        )
        session.execute(
            sa.update(Attempt)
            .where(col(Attempt.id) == ended.id)
            .values(status="completed", ended_at=utcnow() - timedelta(minutes=5))
        )
    keys = {"dtmf": {"digits": "1", "timed_out": False}}
    with receiver(settings) as client:
        answers = [
            client.post(
                f"/webhooks/vonage/{attempt.callback_token}/input", json=keys | {"uuid": f"c-{attempt.id}"}
            )
            for attempt in (busy, ended, live)
        ]
    assert [answer.status_code for answer in answers] == [400, 400, 200]
    assert "not answered (busy)" in answers[0].text and "long after the call ended" in answers[1].text
    with db.session_scope(settings.database_url) as session:
        results = {contact.id: contact.result for contact in session.exec(select(Contact)).all()}
    assert results[busy.contact_id] is None and results[ended.contact_id] is None


def test_a_cequens_dtmf_callback_without_digits_does_not_lock_out_the_answer(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"], provider="cequens", name="c")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    url = f"/webhooks/cequens/{attempt.callback_token}/dtmf"
    with receiver(settings) as client:
        empty = client.get(url, params={"callId": "c-1", "digits": ""})
        real = client.get(url, params={"callId": "c-1", "digits": "2"})
        repeated = client.get(f"{url}?callId=c-1&digits=1&digits=2")
    assert (empty.status_code, real.status_code, repeated.status_code) == (204, 204, 400)
    with db.session_scope(settings.database_url) as session:
        answers = session.exec(select(DtmfAnswer)).all()
    assert [(answer.digits, answer.valid) for answer in answers] == [("2", True)]


def _callback(
    settings: Settings, attempt: Attempt | None, body: dict[str, object], kind: str = "event"
) -> Received:
    token = attempt.callback_token if attempt is not None else "not-a-token"
    hook = Webhook(kind=kind, method="POST", headers={}, query={}, body=json.dumps(body).encode())
    return Received(vonage.PROVIDER, settings.vonage, token, hook)


def test_callbacks_written_together_commit_once_and_a_bad_one_costs_the_others_nothing(
    any_db: Settings,
) -> None:
    first, second = (_attempt_for(any_db, f"+1212555{n:04d}") for n in (1, 2))
    writer = create_app(any_db).state.writer
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    engine = db.get_engine(any_db.database_url)
    sa.event.listen(engine, "commit", count)
    try:
        answered = EVENT | {"uuid": "call-1", "status": "answered"}
        together = writer.write(
            [_callback(any_db, first, answered), _callback(any_db, second, EVENT | {"uuid": "call-2"})]
        )
        assert together == [(True, None), (True, None)]
        assert len(commits) == 1  # two callbacks, one transaction
        commits.clear()
        completed = answered | {"status": "completed", "duration": "30"}
        mixed = [
            _callback(any_db, first, completed),
            _callback(any_db, None, completed),
            _callback(any_db, first, completed),
        ]
        outcomes = writer.write(mixed)
    finally:
        sa.event.remove(engine, "commit", count)
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], WebhookAuthError)
    assert len(commits) == 2  # the group was rolled back, and each good one written alone
    # first's answered and completed, second's answered: the copy of completed is a redelivery
    assert sorted(event.attempt_id or 0 for event in _stored(any_db)) == sorted(
        [first.id, first.id, second.id]
    )
    row = _row(any_db, first)
    assert (row.status, row.duration) == ("completed", 30)


def test_a_group_keeps_its_callbacks_in_one_statement_and_applies_each_once(any_db: Settings) -> None:
    first, second, third = (_attempt_for(any_db, f"+1212555{n:04d}") for n in (1, 2, 3))
    writer = create_app(any_db).state.writer
    inserts: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO webhookevent"):
            inserts.append(statement)

    answered = EVENT | {"status": "answered"}
    completed = answered | {"status": "completed", "duration": "30"}
    engine = db.get_engine(any_db.database_url)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        calls = [(first, "call-1"), (second, "call-2"), (third, "call-3")]
        group = [_callback(any_db, attempt, answered | {"uuid": uuid}) for attempt, uuid in calls]
        assert writer.write(group) == [(True, None)] * 3
        assert len(inserts) == 1  # three callbacks, kept in one statement
        inserts.clear()
        # Again: first's answered (a redelivery), second's completed twice (the copy right behind),
        # third's completed. Each is applied once, and a redelivery is kept once.
        again = [
            _callback(any_db, first, answered | {"uuid": "call-1"}),
            _callback(any_db, second, completed | {"uuid": "call-2"}),
            _callback(any_db, second, completed | {"uuid": "call-2"}),
            _callback(any_db, third, completed | {"uuid": "call-3"}),
        ]
        assert writer.write(again) == [(True, None)] * 4
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(inserts) == 2  # the group's first callbacks of each call, then second's copy alone
    kept = sorted((event.attempt_id or 0, event.payload) for event in _stored(any_db))
    assert len(kept) == len(set(kept)) == 5  # three answered, two completed
    for attempt in (second, third):
        row = _row(any_db, attempt)
        assert (row.status, row.duration) == ("completed", 30)
    assert _row(any_db, first).status == "answered"
    with db.session_scope(any_db.database_url) as session:
        contacts = session.exec(select(Contact).order_by(col(Contact.id))).all()
    assert [contact.state for contact in contacts] == ["calling", "done", "done"]


PHONES = ["+12125550101", "+12125550102", "+12125550103"]
#: Vonage callbacks a call may send, by name: the route's kind and the body (less the call id).
VONAGE_CALLBACKS: dict[str, tuple[str, dict[str, object]]] = {
    "started": ("event", {"status": "started"}),
    "ringing": ("event", {"status": "ringing"}),
    "answered": ("event", {"status": "answered"}),
    "human": ("event", {"status": "human"}),
    "machine": ("event", {"status": "machine"}),
    "busy": ("event", {"status": "busy"}),
    "completed": ("event", {"status": "completed", "duration": "20"}),
    "keys 1": ("input", {"dtmf": {"digits": "1", "timed_out": False}}),
    "keys 7": ("input", {"dtmf": {"digits": "7", "timed_out": False}}),
}


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    script=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(sorted(VONAGE_CALLBACKS))), max_size=14),
    sizes=st.lists(st.integers(1, 6), min_size=14, max_size=14),
)
def test_callbacks_recorded_in_groups_leave_what_they_would_one_at_a_time(
    any_db: Settings, script: list[tuple[int, str]], sizes: list[int]
) -> None:
    # Whatever callbacks come for three calls, in whatever order (copies included) and grouped
    # however, the answers and the calls, contacts and answers recorded are those of recording
    # the same callbacks one at a time.
    writer = create_app(any_db).state.writer
    run = uuid.uuid4().hex[:8]
    grouped, alone = (
        queued_attempts(
            any_db.database_url, campaign_with_contacts(any_db.database_url, PHONES, name=name), 3
        )
        for name in (f"grouped-{run}", f"alone-{run}")
    )

    def callbacks(attempts: list[Attempt]) -> list[Received]:
        made = []
        for index, name in script:
            kind, body = VONAGE_CALLBACKS[name]
            key = "call_uuid" if body.get("status") in ("human", "machine") else "uuid"
            call_id = f"{attempts[index].callback_token}-call"  # each call its own
            made.append(_callback(any_db, attempts[index], body | {key: call_id}, kind=kind))
        return made

    outcomes: list[tuple[bool, object]] = []
    pending = callbacks(grouped)
    for size in sizes:  # fourteen groups hold any script
        group, pending = pending[:size], pending[size:]
        outcomes += writer.write(group) if group else []
    one_by_one = [outcome for callback in callbacks(alone) for outcome in writer.write([callback])]

    def seen(outcome: tuple[bool, object], attempt: Attempt) -> object:
        ok, value = outcome
        token = attempt.callback_token or ""
        return json.dumps(value).replace(token, "<token>") if ok else type(value)

    assert [seen(o, grouped[i]) for o, (i, _) in zip(outcomes, script, strict=True)] == [
        seen(o, alone[i]) for o, (i, _) in zip(one_by_one, script, strict=True)
    ]
    assert _recorded(any_db, grouped) == _recorded(any_db, alone)


def _recorded(settings: Settings, attempts: list[Attempt]) -> list[tuple[object, ...]]:
    """What the receiver recorded of ``attempts``' calls, their contacts and their answers, less
    the times (each group is recorded at one moment)."""
    with db.session_scope(settings.database_url) as session:
        found = []
        for each in attempts:
            attempt, contact = session.get(Attempt, each.id), session.get(Contact, each.contact_id)
            assert attempt is not None and contact is not None
            answers = session.exec(
                select(DtmfAnswer).where(DtmfAnswer.attempt_id == each.id).order_by(col(DtmfAnswer.id))
            ).all()
            kept = session.exec(select(WebhookEvent).where(WebhookEvent.attempt_id == each.id)).all()
            found.append(
                (
                    attempt.status,
                    attempt.duration,
                    attempt.answered_by,
                    attempt.reason,
                    attempt.step_seq,
                    attempt.dtmf_buffer,
                    attempt.ended_at is None,
                    contact.state,
                    contact.result,
                    [(a.step, a.seq, a.digits, a.choice, a.valid) for a in answers],
                    sorted((event.kind, json.loads(event.payload).get("status")) for event in kept),
                )
            )
        return found


def test_with_the_database_down_a_callback_gets_a_503_to_come_again(settings: Settings) -> None:
    down = settings.model_copy(update={"database_url": "postgresql://dialer@127.0.0.1:9/none"})
    with receiver(down) as client:
        answer = client.post("/webhooks/vonage/some-token/event", json=EVENT)
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "5")


def test_in_a_group_a_calls_later_callback_sees_what_its_earlier_one_did(any_db: Settings) -> None:
    # The group's attempts are read together at its start; a second callback of the same call
    # must see the first one's change: keys pressed after the call ended busy are refused.
    attempt = _attempt_for(any_db, "+12125550001")
    writer = create_app(any_db).state.writer
    busy = EVENT | {"uuid": "call-1", "status": "busy"}
    keys = {"uuid": "call-1", "dtmf": {"digits": "1", "timed_out": False}}
    outcomes = writer.write(
        [_callback(any_db, attempt, busy), _callback(any_db, attempt, keys, kind="input")]
    )
    assert outcomes[0] == (True, None)
    assert not outcomes[1][0] and "not answered" in str(outcomes[1][1])
    assert _row(any_db, attempt).status == "busy"


def test_vonage_events_without_a_status_are_recorded_and_change_nothing(settings: Settings) -> None:
    attempt = _attempt(settings)
    url = f"/webhooks/vonage/{attempt.callback_token}/event"
    error = {"reason": "Syntax error in NCCO. Invalid value type or action.", "conversation_uuid": "CON-1"}
    transfer = {
        "conversation_uuid_from": "CON-1",
        "conversation_uuid_to": "CON-2",
        "type": "transfer",
        "uuid": "call-1",
        "timestamp": "2026-12-04T17:00:00.000Z",
    }
    with receiver(settings) as client:
        answers = [client.post(url, json=body).status_code for body in (EVENT, error, transfer)]
    assert answers == [204, 204, 204]
    assert sorted(json.loads(event.payload).get("status", "-") for event in _stored(settings)) == [
        "-",
        "-",
        "answered",
    ]
    assert _row(settings, attempt).status == "answered"


def test_a_key_press_goes_ahead_of_its_group_unless_its_call_has_a_callback_before_it(
    settings: Settings,
) -> None:
    def taken(token: str, kind: str) -> tuple[Received, object]:
        hook = Webhook(kind=kind, method="POST", headers={}, query={}, body=b"{}")
        return Received(vonage.PROVIDER, settings.vonage, token, hook), object()

    group = [taken("a", "event"), taken("a", "input"), taken("b", "input"), taken("c", "event")]
    pressed, rest = _first_presses(group)  # type: ignore[arg-type]
    assert [(c.token, c.webhook.kind) for c, _ in pressed] == [("b", "input")]
    assert [(c.token, c.webhook.kind) for c, _ in rest] == [("a", "event"), ("a", "input"), ("c", "event")]
