"""Prometheus metrics, served by ``dialer serve --metrics-port PORT`` in Prometheus' text format.

What every process shares is read at each scrape from where it lives: calls placed by provider and
outcome, attempts queued and calls in progress, and each campaign's contacts by state from the
database; the provider's 429s from Redis, where each worker counts them. The receiver's own
callbacks (latency, answers by status code) are counted in its process. The metrics listen on
their own port, not the receiver's public one: campaign names and volumes are not for providers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import col

from campaigns.outcomes import FINAL, AttemptStatus
from dialer import notify
from dialer.db import session_scope
from dialer.models import Attempt, Campaign, Contact
from dialer.settings import Settings

log = logging.getLogger(__name__)

RATE_LIMITED = "dialer:metrics:rate-limited:"
"""Redis key prefix: the 429s each provider answered, counted by every worker."""


def count_rate_limited(client: redis.Redis, provider: str) -> None:
    """Count one 429 from ``provider`` (a worker calls this; a failure only loses the count)."""
    try:
        client.incr(RATE_LIMITED + provider)
    except redis.RedisError as error:
        log.warning("a 429 from %s was not counted: %s", provider, error)


@dataclass(frozen=True)
class ReceiverMetrics:
    """The receiver's own: how long each callback took to answer, and the answers by status code."""

    seconds: Histogram
    answers: Counter

    def observe(self, provider: str, status: int, seconds: float) -> None:
        self.seconds.labels(provider).observe(seconds)
        self.answers.labels(provider, str(status)).inc()


class SharedState(Collector):
    """Read at each scrape from the database and Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> Iterable[Metric]:
        return []  # nothing read at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        yield from self._redis()

    def _database(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dialer_database_up", "Whether the database answered this scrape.")
        calls = CounterMetricFamily(
            "dialer_calls", "Attempts ended, by provider and outcome.", labels=["provider", "outcome"]
        )
        live = GaugeMetricFamily(
            "dialer_calls_in_progress",
            "Attempts placed and not ended, by status.",
            labels=["provider", "status"],
        )
        queued = GaugeMetricFamily(
            "dialer_attempts_queued", "Attempts waiting for a worker to place them.", labels=["provider"]
        )
        contacts = GaugeMetricFamily(
            "dialer_campaign_contacts", "A campaign's contacts by state.", labels=["campaign", "state"]
        )
        pushed = GaugeMetricFamily(
            "dialer_notifications",
            "Results pushed to campaigns' [notify] URLs, by state: delivered, waiting, failing, given_up.",
            labels=["state"],
        )
        info = GaugeMetricFamily(
            "dialer_campaign_info",
            "Each campaign, with its status and the provider it calls through (its route): when that is"
            " not its first, route_cause says why it left the one before (refused, balance, failures).",
            labels=["campaign", "provider", "status", "route_cause"],
        )
        try:
            with session_scope(self.settings.database_url) as session:
                attempts = session.execute(
                    sa.select(col(Attempt.provider), col(Attempt.status), sa.func.count()).group_by(
                        col(Attempt.provider), col(Attempt.status)
                    )
                ).all()
                campaigns = session.execute(
                    sa.select(
                        col(Campaign.name),
                        col(Campaign.provider),
                        col(Campaign.status),
                        col(Campaign.route_cause),
                    )
                ).all()
                standing = notify.standing(session)
                states = session.execute(
                    sa.select(col(Campaign.name), col(Contact.state), sa.func.count())
                    .join(Campaign, col(Campaign.id) == col(Contact.campaign_id))
                    .group_by(col(Campaign.name), col(Contact.state))
                ).all()
        except sa.exc.SQLAlchemyError as error:
            log.warning("metrics: the database did not answer: %s", error.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for provider, status, count in attempts:
            if AttemptStatus(status) in FINAL:
                calls.add_metric([provider, status], count)
            elif status == AttemptStatus.QUEUED:
                queued.add_metric([provider], count)
            else:
                live.add_metric([provider, status], count)
        for name, provider, status, cause in campaigns:
            info.add_metric([name, provider, status, cause or ""], 1)
        for name, state, count in states:
            contacts.add_metric([name, state], count)
        for state in ("delivered", "waiting", "failing", "given_up"):
            pushed.add_metric([state], standing[state])
        yield from (up, calls, live, queued, contacts, info, pushed)

    def _redis(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dialer_redis_up", "Whether Redis answered this scrape.")
        refused = CounterMetricFamily(
            "dialer_provider_rate_limited", "Requests a provider refused with 429.", labels=["provider"]
        )
        try:
            client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
            keys = sorted(client.scan_iter(match=RATE_LIMITED + "*"))
            values = client.mget(keys) if keys else []
        except redis.RedisError as error:
            log.warning("metrics: Redis did not answer: %s", error.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for key, value in zip(keys, values, strict=True):
            refused.add_metric([key.decode()[len(RATE_LIMITED) :]], int(value or 0))
        yield from (up, refused)


def registry(
    settings: Settings, *, receiver: bool = True
) -> tuple[CollectorRegistry, ReceiverMetrics | None]:
    """A registry with the shared state, and the receiver's own metrics if ``receiver``."""
    found = CollectorRegistry()
    found.register(SharedState(settings))
    if not receiver:
        return found, None
    own = ReceiverMetrics(
        seconds=Histogram(
            "dialer_webhook_seconds",
            "Seconds from a callback's arrival to its answer (recorded before a 2xx).",
            ["provider"],
            registry=found,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        ),
        answers=Counter(
            "dialer_webhooks",
            "Callbacks answered, by provider and status code.",
            ["provider", "code"],
            registry=found,
        ),
    )
    return found, own


def serve(found: CollectorRegistry, *, host: str, port: int) -> None:
    """Answer ``GET /metrics`` on ``host:port`` from a background thread."""
    start_http_server(port, addr=host, registry=found)
