"""Results pushed to the operator's URL: written with each result, signed, retried, never lost.

The receiver is the test's own: down at first, then too slow, then answering 500, then taking
them; the `dialer run` delivering them is killed in the middle. Every result arrives, and every
request's signature verifies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pydantic import SecretStr
from sqlmodel import col, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaigns.outcomes import AttemptStatus
from dialer import db, notify
from dialer.cli import main
from dialer.embedded import BackgroundServer, loopback_socket
from dialer.models import Contact, Notification, utcnow
from dialer.providers.base import CallEvent
from dialer.recorder import apply_event
from dialer.settings import Settings
from tests.dialer.factories import NOW, campaign_with_contacts, queued_attempts
from tests.e2e import campaign_text, write_contacts

SECRET = "whsec-test-0123456789"


class Receiver:
    """The operator's system: records each request and whether its signature verifies; ``mode``
    says how it answers (``ok``, ``slow``: past the sender's timeout, ``500``)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.received.append(
                {
                    "event_id": request.headers.get(notify.EVENT_ID),
                    "signed": notify.verify(SECRET, request.headers.get(notify.SIGNATURE, ""), body),
                    "body": json.loads(body),
                    "mode": self.mode,
                }
            )
        if self.mode == "slow":
            await asyncio.sleep(3)
        return Response(status_code=500 if self.mode == "500" else 204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    def taken(self) -> list[dict[str, Any]]:
        """The requests it took (answered 2xx)."""
        with self.lock:
            return [r for r in self.received if r["mode"] == "ok"]


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body = b'{"id":"1"}'
    header = notify.sign(SECRET, body, 1_700_000_000)
    assert notify.verify(SECRET, header, body, now=1_700_000_100)
    assert not notify.verify(SECRET, header, body + b" ", now=1_700_000_100)
    assert not notify.verify("another secret", header, body, now=1_700_000_100)
    assert not notify.verify(SECRET, header, body, now=1_700_000_000 + notify.TOLERANCE + 1)  # replayed
    assert not notify.verify(SECRET, "v1=00", body)


def _campaign(url: str, hook: str, attempts: bool = False) -> Any:
    text = campaign_text("vonage", 60) + f'\n[notify]\nurl = "{hook}"\nattempts = {str(attempts).lower()}\n'
    campaign = campaign_with_contacts(url, ["+12125550101", "+12125550102"], text=text)
    return queued_attempts(url, campaign, 2)


def test_a_result_and_its_notification_are_written_together(settings: Settings) -> None:
    first, second = _campaign(settings.database_url, "http://127.0.0.1:9/hook", attempts=True)
    with pytest.raises(RuntimeError), db.session_scope(settings.database_url) as session:
        apply_event(session, attempt=first, event=CallEvent(status=AttemptStatus.COMPLETED), now=NOW)
        raise RuntimeError("the transaction is rolled back")
    with db.session_scope(settings.database_url) as session:
        assert session.exec(select(Notification)).all() == []
        apply_event(session, attempt=first, event=CallEvent(status=AttemptStatus.COMPLETED), now=NOW)
        apply_event(session, attempt=second, event=CallEvent(status=AttemptStatus.BUSY), now=NOW)  # retried
    with db.session_scope(settings.database_url) as session:
        kinds = sorted((n.kind, n.contact_id) for n in session.exec(select(Notification)))
    assert kinds == [
        ("attempt.ended", first.contact_id),
        ("attempt.ended", second.contact_id),
        ("contact.finished", first.contact_id),  # the busy one is not finished: no result yet
    ]


def test_results_are_delivered_signed_and_failures_tried_again_later(settings: Settings) -> None:
    receiver = Receiver()
    settings = settings.model_copy(update={"notify_secret": SecretStr(SECRET), "notify_timeout": 1.0})
    with BackgroundServer(receiver.app()) as server, httpx.Client() as http:
        first, _ = _campaign(settings.database_url, f"{server.url}/hook")
        with db.session_scope(settings.database_url) as session:
            apply_event(
                session,
                attempt=first,
                event=CallEvent(status=AttemptStatus.COMPLETED, duration=31),
                now=utcnow(),
            )
        receiver.mode = "500"
        assert notify.deliver_due(settings, http) == {"failed": 1}
        assert notify.deliver_due(settings, http) == {}  # not due again for 10 s
        with db.session_scope(settings.database_url) as session:
            row = session.exec(select(Notification)).one()
            assert (row.tries, row.last_error) == (1, "answered 500")
            assert row.next_try_at is not None and row.next_try_at > utcnow() + timedelta(seconds=9)
            row.next_try_at = utcnow()
            session.add(row)
        receiver.mode = "ok"
        assert notify.deliver_due(settings, http) == {"delivered": 1}
        (request,) = receiver.taken()
    assert request["signed"] and request["event_id"] == request["body"]["id"]
    body = request["body"]
    assert body["type"] == "contact.finished" and body["campaign"] == "e2e"
    assert body["contact"] | {"columns": None} == {
        "phone": "+12125550101",
        "extension": None,
        "row": 2,
        "columns": None,
        "result": "reached",
        "attempts": 1,
    }
    assert body["last_attempt"]["outcome"] == "completed" and body["last_attempt"]["duration"] == 31
    assert [r["event_id"] for r in receiver.received] == [request["event_id"]] * 2  # the same event


def test_a_result_is_given_up_after_three_days_and_replayed_on_demand(settings: Settings) -> None:
    settings = settings.model_copy(update={"notify_secret": SecretStr(SECRET), "notify_timeout": 0.5})
    with loopback_socket() as closed:  # nobody listens there
        hook = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    first, _ = _campaign(settings.database_url, hook)
    with db.session_scope(settings.database_url) as session:
        apply_event(session, attempt=first, event=CallEvent(status=AttemptStatus.COMPLETED), now=NOW)
        session.execute(sa.update(Notification).values(created_at=utcnow() - timedelta(days=3)))
    with httpx.Client() as http:
        assert notify.deliver_due(settings, http) == {"given_up": 1}
    env = {"DIALER_DATABASE_URL": settings.database_url}
    status = CliRunner().invoke(main, ["status", "e2e"], env=env).output
    text = " ".join(status.replace("│", " ").split())  # the table's cells, wrapped or not
    assert (
        f"results pushed 0 delivered to {hook}, 1 given up (`dialer notify replay`); last error: Connect"
        in text
    )
    result = CliRunner().invoke(main, ["notify", "replay", "e2e"], env=env)
    assert result.output.startswith("1 result(s) of e2e to send again")


@pytest.mark.timeout(240)
def test_every_result_arrives_signed_through_a_receiver_down_slow_and_failing_and_a_killed_run(
    tmp_path: Path, sqlite_url: str
) -> None:
    receiver = Receiver()
    hook_socket = loopback_socket()
    hook = f"http://127.0.0.1:{hook_socket.getsockname()[1]}/hook"  # bound, not listening: refused
    env = {"DIALER_DATABASE_URL": sqlite_url}
    path = tmp_path / "campaign.toml"
    path.write_text(campaign_text() + f'\n[notify]\nurl = "{hook}"\nattempts = true\n')
    invoke = CliRunner().invoke
    assert (
        invoke(main, ["campaign", "create", str(path)], env=env | {"DIALER_NOTIFY_SECRET": SECRET}).exit_code
        == 0
    )
    assert (
        invoke(main, ["import", str(write_contacts(tmp_path, 30)), "--campaign", "e2e"], env=env).exit_code
        == 0
    )
    run_env = (
        os.environ
        | env
        | {
            "DIALER_NOTIFY_SECRET": SECRET,
            "DIALER_NOTIFY_TIMEOUT": "1",
            "DIALER_NOTIFY_FIRST_RETRY": "0.2",
        }
    )

    def dialer(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "dialer", *args],
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    def tried() -> int:
        with db.session_scope(sqlite_url) as session:
            return session.scalar(sa.select(sa.func.count()).where(col(Notification.tries) > 0)) or 0

    first = dialer("run", "e2e", "--simulate", "--time-scale", "0.05")
    wait_for(lambda: tried() >= 5, "deliveries refused while the receiver is down")
    with BackgroundServer(receiver.app(), sock=hook_socket):
        receiver.mode = "slow"
        wait_for(
            lambda: any(r["mode"] == "slow" for r in receiver.received), "a delivery to the slow receiver"
        )
        first.send_signal(signal.SIGKILL)  # in the middle of a delivery
        first.communicate()
        receiver.mode = "500"
        second = dialer("run", "e2e", "--simulate", "--time-scale", "0.05")
        wait_for(lambda: any(r["mode"] == "500" for r in receiver.received), "a delivery answered 500")
        receiver.mode = "ok"
        output, _ = second.communicate(timeout=180)
        assert second.returncode == 0, output
        sent = dialer("notify", "send", "e2e")
        output, _ = sent.communicate(timeout=120)
        assert sent.returncode == 0, output
        assert " result(s) of e2e delivered" in output
    with db.session_scope(sqlite_url) as session:
        contacts = {c.phone: c.result for c in session.exec(select(Contact))}
        expected = {n.event_id for n in session.exec(select(Notification))}
        left = session.scalar(sa.select(sa.func.count()).where(col(Notification.delivered_at).is_(None)))
    assert left == 0
    assert all(request["signed"] for request in receiver.received)
    taken = receiver.taken()
    assert {r["event_id"] for r in taken} == expected  # every event arrived, whatever was repeated
    finished = {
        r["body"]["contact"]["phone"]: r["body"]["contact"]["result"]
        for r in taken
        if r["body"]["type"] == "contact.finished"
    }
    assert finished == contacts
    assert {r["mode"] for r in receiver.received} == {"slow", "500", "ok"}
