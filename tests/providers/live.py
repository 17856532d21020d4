"""A provider's simulator and our receiver on loopback, and one contact called through them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlmodel import col, select

from campaigns.outcomes import AttemptStatus
from dialer import db
from dialer.dispatch import place_call
from dialer.embedded import BackgroundServer, local_runtime, loopback_socket
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer, WebhookEvent
from dialer.receiver import create_app as receiver_app
from dialer.runtime import Runtime
from dialer.settings import Settings
from dialer.simulators import simulator_app, simulator_urls
from dialer.simulators.base import Script, Simulation
from tests.dialer.factories import NOW, campaign_with_contacts, queued_attempts


@dataclass
class Live:
    settings: Settings
    simulation: Simulation
    simulator_url: str
    runtime: Runtime


@contextmanager
def live(
    provider: str, settings: Settings, *, time_scale: float = 0.01, readings: dict[str, str] | None = None
) -> Iterator[Live]:
    """``provider``'s simulator (reading its documents as ``readings`` say) and the receiver, each
    on its own loopback port."""
    sim_socket, web_socket = loopback_socket(), loopback_socket()
    sim_url, web_url = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in (sim_socket, web_socket))
    account = settings.provider_settings(provider).model_copy(update={**simulator_urls(provider, sim_url)})
    pointed = settings.model_copy(update={"public_url": web_url, provider: account})
    app = simulator_app(provider, pointed, rate_limit=50, time_scale=time_scale, readings=readings)
    with BackgroundServer(app, sock=sim_socket), BackgroundServer(receiver_app(pointed), sock=web_socket):
        rt = local_runtime(pointed, lambda attempt_id, countdown: None)
        # Calls are placed at the factories' NOW, 10:00 on a Monday in New York: inside the
        # calling window of every campaign here (the examples' too), whatever the hour of the run.
        rt.clock = lambda: NOW
        try:
            yield Live(pointed, app.state.simulation, sim_url, rt)
        finally:
            rt.http.close()


@dataclass
class Called:
    attempt: Attempt
    contact: Contact
    campaign: Campaign
    answer: DtmfAnswer | None
    events: list[WebhookEvent]


def call(
    deployment: Live, text: str, phone: str, script: Script | None = None, *, timeout: float = 15.0
) -> Called:
    """Call ``phone`` of a campaign made from ``text``, as a worker would; wait until it is over."""
    url = deployment.settings.database_url
    if script is not None:
        deployment.simulation.scripts[phone] = script
    campaign = campaign_with_contacts(url, [phone], text=text)
    (attempt,) = queued_attempts(url, campaign, 1)
    place_call(deployment.runtime, attempt.id or 0)
    deadline = time.monotonic() + timeout
    while True:
        with db.session_scope(url) as session:
            stored = session.get(Attempt, attempt.id)
            assert stored is not None
            if AttemptStatus(stored.status).is_final or time.monotonic() > deadline:
                time.sleep(0.2)  # what the provider sends after the final status (Routee's tones)
                session.expire_all()
                return Called(
                    attempt=session.get(Attempt, attempt.id),  # type: ignore[arg-type]
                    contact=session.get(Contact, attempt.contact_id),  # type: ignore[arg-type]
                    campaign=session.get(Campaign, campaign.id),  # type: ignore[arg-type]
                    answer=session.exec(
                        select(DtmfAnswer).where(col(DtmfAnswer.attempt_id) == attempt.id)
                    ).first(),
                    events=list(
                        session.exec(
                            select(WebhookEvent)
                            .where(col(WebhookEvent.attempt_id) == attempt.id)
                            .order_by(col(WebhookEvent.id))
                        ).all()
                    ),
                )
        time.sleep(0.02)


def when_done(url: str) -> list[tuple[Contact, list[DtmfAnswer]]]:
    """Every contact of the database once all are done, with its answers."""
    deadline = time.monotonic() + 30
    while True:
        with db.session_scope(url) as session:
            contacts = session.exec(select(Contact).order_by(col(Contact.id))).all()
            if all(contact.state == "done" for contact in contacts):
                return [
                    (
                        contact,
                        list(
                            session.exec(select(DtmfAnswer).where(col(DtmfAnswer.contact_id) == contact.id))
                        ),
                    )
                    for contact in contacts
                ]
        assert time.monotonic() < deadline, [(c.phone, c.state) for c in contacts]
        time.sleep(0.05)
