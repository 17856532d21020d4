"""Build campaigns, contacts and attempts in a test database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from campaigns.spec import parse_campaign
from dialer import db
from dialer.models import Attempt, Campaign
from dialer.operations import change_status, create_campaign
from dialer.pacing import LocalLimiter
from dialer.runtime import Runtime
from dialer.scheduler import claim_due
from dialer.settings import Settings
from tests.e2e import campaign_text

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def campaign_with_contacts(url: str, phones: list[str], *, delay: float = 60) -> Campaign:
    import sqlalchemy as sa

    from dialer.models import Contact

    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(campaign_text("vonage", delay)))
        session.execute(
            sa.insert(Contact),
            [
                {
                    "campaign_id": campaign.id,
                    "phone": p,
                    "variables": {"first_name": "Ada"},
                    "row_number": i + 2,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": NOW,
                    "updated_at": NOW,
                }
                for i, p in enumerate(phones)
            ],
        )
        change_status(session, name="e2e", action="start", now=NOW)
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
