"""Whatever arrives at the receiver, it answers without failing, writes nothing unauthenticated, and
never changes a finished call.

Hypothesis sends arbitrary bodies (bytes, any JSON, and payloads shaped like each provider's with
arbitrary values), headers and query strings to every provider's routes, with the right token,
a finished call's token, or none, through ``dialer serve``'s app over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlmodel import col, select

from dialer import db
from dialer.embedded import BackgroundServer
from dialer.models import Attempt, WebhookEvent, utcnow
from dialer.providers import PROVIDERS
from dialer.receiver import create_app
from dialer.settings import Settings
from tests.dialer.factories import campaign_with_contacts, queued_attempts

KINDS = sorted({kind for provider in PROVIDERS.values() for kind in provider.webhook_kinds})
#: Fields each provider's callbacks carry, to build payloads that look right with values that may not be.
FIELDS = {
    "vonage": ["status", "uuid", "call_uuid", "duration", "price", "sub_state", "dtmf", "timestamp"],
    "cm": ["type", "call-id", "result", "digits", "answered-on", "ended-on"],
    "routee": ["status", "conversationTrackingId", "duration", "price", "collectedTones", "answeredBy"],
    "cequens": ["callId", "status", "duration", "digits"],
    "fractel": ["uid", "status", "disposition", "billable_seconds"],
}
FIGURES = ("status", "duration", "price", "answered_by", "provider_call_id", "ended_at", "reason")


@dataclass
class Stage:
    client: httpx.Client
    url: str
    live: dict[str, Attempt]
    finished: dict[str, Attempt]


@pytest.fixture
def stage(settings: Settings) -> Iterator[Stage]:
    """For every provider, a call in progress and a finished one, and the receiver on loopback."""
    url = settings.database_url
    live: dict[str, Attempt] = {}
    finished: dict[str, Attempt] = {}
    for index, name in enumerate(PROVIDERS):
        phones = [f"+12125550{index}16", f"+12125550{index}27"]
        campaign = campaign_with_contacts(url, phones, provider=name, name=name)
        live[name], finished[name] = queued_attempts(url, campaign, 2)
        with db.session_scope(url) as session:
            session.execute(
                sa.update(Attempt)
                .where(col(Attempt.id) == finished[name].id)
                .values(
                    status="completed",
                    provider_call_id=f"done-{name}",
                    duration=30,
                    price="0.01",
                    answered_by="human",
                    ended_at=utcnow(),
                )
            )
            session.execute(
                sa.update(Attempt).where(col(Attempt.id) == live[name].id).values(status="ringing")
            )
    with BackgroundServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as client:
        yield Stage(client, url, live, finished)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn, provider: str) -> bytes:
    shape = draw(st.sampled_from(["bytes", "json", "shaped"]))
    if shape == "bytes":
        return draw(st.binary(max_size=300))
    if shape == "json":
        return json.dumps(draw(json_values)).encode()
    keys = draw(st.lists(st.sampled_from(FIELDS[provider]), unique=True, max_size=6))
    payload = {key: draw(json_values) for key in keys}
    return json.dumps(payload).encode()


header_values = st.binary(min_size=0, max_size=40).map(
    # Any byte HTTP lets a header value hold (h11 refuses the rest before sending).
    lambda raw: bytes(b for b in raw if b >= 32 and b != 127).strip()
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    provider = draw(st.sampled_from(sorted(PROVIDERS)))
    return {
        "provider": draw(st.sampled_from([provider, provider, "nobody"])),
        "kind": draw(st.sampled_from([*KINDS, "other"])),
        "token": draw(st.sampled_from(["live", "finished", "forged", "account"])),
        "method": draw(st.sampled_from(["POST", "POST", "GET"])),
        "headers": draw(
            st.dictionaries(
                st.sampled_from(["authorization", "content-type", "x-cm-producttoken", "x-extra"]),
                header_values,
                max_size=3,
            )
        ),
        "query": draw(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=4)),
        "body": draw(bodies(provider)),
        "for": provider,
    }


def _snapshot(url: str, attempts: dict[str, Attempt]) -> dict[str, tuple[Any, ...]]:
    with db.session_scope(url) as session:
        rows = {name: session.get(Attempt, attempt.id) for name, attempt in attempts.items()}
        return {name: tuple(getattr(row, field) for field in FIGURES) for name, row in rows.items() if row}


def _events(url: str) -> list[tuple[int | None, str | None]]:
    with db.session_scope(url) as session:
        return [(e.attempt_id, e.call_id) for e in session.exec(select(WebhookEvent)).all()]


@hypothesis_settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_no_callback_fails_the_receiver_or_writes_without_its_token(
    stage: Stage, request: dict[str, Any]
) -> None:
    finished_before = _snapshot(stage.url, stage.finished)
    events_before = _events(stage.url)
    provider = request["for"]
    token = {
        "live": stage.live[provider].callback_token,
        "finished": stage.finished[provider].callback_token,
        "forged": "forged-token",
        "account": "account",
    }[request["token"]]
    path = "/webhooks/" + "/".join(
        quote(part, safe="") for part in (request["provider"], token, request["kind"])
    )
    answer = stage.client.request(
        request["method"],
        path,
        params=request["query"],
        headers=request["headers"],
        content=request["body"] if request["method"] == "POST" else None,
    )
    assert answer.status_code < 500, answer.text
    assert _snapshot(stage.url, stage.finished) == finished_before  # a finished call never changes
    new = [event for event in _events(stage.url) if event not in events_before]
    authentic = request["provider"] == provider and request["token"] in ("live", "finished")
    if not authentic:
        assert new == []  # no row without a valid token (or Fractel's credentials, never sent here)
    assert all(attempt_id in (stage.live[provider].id, stage.finished[provider].id) for attempt_id, _ in new)
