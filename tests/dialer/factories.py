"""Build campaigns, contacts and attempts in a test database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from campaigns.spec import parse_campaign
from dialer import db
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer
from dialer.operations import change_status, create_campaign
from dialer.pacing import LocalLimiter
from dialer.runtime import Runtime
from dialer.scheduler import claim_due
from dialer.settings import Settings
from tests.e2e import campaign_text

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def campaign_with_contacts(
    url: str,
    phones: list[str],
    *,
    delay: float = 60,
    name: str = "e2e",
    provider: str = "vonage",
    text: str | None = None,
    variables: dict[str, dict[str, str]] | None = None,
) -> Campaign:
    """A running campaign (the e2e test campaign, or ``text``) with ``phones`` due now, each with
    its ``variables`` (else a first name)."""
    text = (text or campaign_text(provider, delay)).replace('name = "e2e"', f'name = "{name}"')
    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(text))
        session.execute(
            sa.insert(Contact),
            [
                {
                    "campaign_id": campaign.id,
                    "phone": p,
                    "variables": (variables or {}).get(p, {"first_name": "Ada"}),
                    "row_number": i + 2,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": NOW,
                    "updated_at": NOW,
                }
                for i, p in enumerate(phones)
            ],
        )
        change_status(session, name=name, action="start", now=NOW)
    return campaign


def queued_attempts(url: str, campaign: Campaign, count: int) -> list[Attempt]:
    with db.session_scope(url) as session:
        ids = claim_due(
            session, campaign=session.get(Campaign, campaign.id), spec=_spec(), limit=count, now=NOW
        )  # type: ignore[arg-type]
        return [session.get(Attempt, i) for i in ids]  # type: ignore[misc]


def _spec():  # type: ignore[no-untyped-def]
    return parse_campaign(campaign_text("vonage", 60))


class FakeVonage:
    """An httpx transport answering create-call requests, counting them."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self._responses = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self._responses:
            return self._responses.pop(0)
        return httpx.Response(201, json={"uuid": f"call-{len(self.requests)}", "status": "started"})


def runtime(
    settings: Settings,
    transport: Callable[[httpx.Request], httpx.Response],
    enqueued: list[tuple[int, float]],
) -> Runtime:
    return Runtime(
        settings=settings,
        limiter=LocalLimiter(),
        http=httpx.Client(transport=httpx.MockTransport(transport)),
        enqueue=lambda attempt_id, countdown: enqueued.append((attempt_id, countdown)),
        clock=lambda: NOW,
        sleep=lambda seconds: None,
    )


def moving_clock(rt: Runtime) -> list[float]:
    """Give ``rt`` a limiter on a clock the test moves (``now[0]``); sleeping moves it too."""
    now = [1000.0]
    rt.limiter = LocalLimiter(lambda: now[0])
    rt.sleep = lambda seconds: now.__setitem__(0, now[0] + seconds)
    return now


def hold_every_permit(rt: Runtime, provider: str, now: list[float]) -> float:
    """Send requests through ``provider``'s gate until it has no permit left, none answered yet;
    return when the first of them left."""
    gate = rt.provider_gate(provider)
    departures = []
    for n in range(gate.permits):
        while rt.limiter.admit(gate, f"held-{n}") > 0:
            now[0] += gate.interval
        departures.append(now[0])
    return departures[0]


def finished_campaign(url: str) -> Campaign:
    """Three contacts: answered with a choice on the 2nd attempt, busy then exhausted, not yet called."""
    campaign = campaign_with_contacts(url, ["+12125550106", "+12125550100", "+12125550107"])
    with db.session_scope(url) as session:
        contacts = session.scalars(sa.select(Contact).order_by(Contact.id)).all()
        contacts[0].variables = {"first_name": '=HYPERLINK("http://evil")', "note": "VIP"}
        contacts[0].state, contacts[0].result, contacts[0].attempts = "done", "dtmf_answered", 2
        contacts[1].variables = {"first_name": "Ben", "note": ""}
        contacts[1].state, contacts[1].result, contacts[1].attempts = "done", "exhausted", 1
        contacts[2].variables = {"first_name": "Cy", "note": "-"}
        rows = [
            (contacts[0], 1, "busy", None, None),
            (contacts[0], 2, "completed", 42, "0.00840000"),
            (contacts[1], 1, "busy", None, None),
        ]
        for contact, number, status, duration, price in rows:
            ended = NOW + timedelta(minutes=number)
            attempt = Attempt(
                campaign_id=campaign.id or 0,
                contact_id=contact.id or 0,
                number=number,
                provider="vonage",
                status=status,
                callback_token=f"token-{contact.id}-{number}",
                provider_call_id=f"call-{contact.id}-{number}",
                duration=duration,
                price=price,
                queued_at=ended - timedelta(seconds=50),
                dispatched_at=ended - timedelta(seconds=49),
                ended_at=ended,
            )
            session.add(attempt)
            session.flush()
            if status == "completed":
                session.add(
                    DtmfAnswer(
                        attempt_id=attempt.id or 0,
                        contact_id=contact.id or 0,
                        digits="1",
                        choice="confirm",
                        valid=True,
                        received_at=ended,
                    )
                )
    return campaign
