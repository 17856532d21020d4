"""What the dispatch and scheduling functions need from the outside world, injected."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col

from campaigns.spec import CampaignSpec, Window
from dialer.models import Campaign, utcnow
from dialer.pacing import Bucket, Gate, Limiter
from dialer.providers import account_limit
from dialer.providers.client import ProviderClient
from dialer.settings import Settings


@dataclass
class Runtime:
    """Settings, the limiter, the HTTP client, and how to enqueue ``place_call`` (Celery or local)."""

    settings: Settings
    limiter: Limiter
    http: httpx.Client
    enqueue: Callable[[int, float], None]
    clock: Callable[[], datetime] = field(default=utcnow)
    sleep: Callable[[float], None] = field(default=time.sleep)
    on_rate_limited: Callable[[str], None] = field(default=lambda provider: None)
    """Told the provider's name each time it answers 429 (the workers count them in Redis)."""
    only: frozenset[int] | None = None
    """The campaigns (ids) this runtime pumps and sweeps; None: every one (``dialer run`` serves one)."""
    simulated: bool = False
    """Its calls go to a provider's simulator (``dialer run --simulate``): their attempts say so."""
    any_time: bool = False
    """Calls are placed whatever the campaigns' windows say (``dialer run --simulate --ignore-window``)."""
    holder: str | None = None
    """The lease this runtime dials under (``dialer run``'s, :mod:`dialer.lease`): a call is claimed
    only while its campaign's lease is this holder's, and sent within the lease's send window.
    None: no lease is checked."""
    calls: ProviderClient = field(init=False)
    _failures: Counter[str] = field(default_factory=Counter, init=False)
    _failures_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.calls = ProviderClient(self.http)

    def failed(self, provider: str) -> int:
        """Note a request to ``provider`` that failed (5xx, unreachable, no answer): how many in a row."""
        with self._failures_lock:
            self._failures[provider] += 1
            return self._failures[provider]

    def succeeded(self, provider: str) -> None:
        """A request to ``provider`` went through: the run of failures is over."""
        with self._failures_lock:
            self._failures[provider] = 0

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def spec_of(self, campaign: Campaign) -> CampaignSpec:
        """The campaign's spec as this runtime calls it (its window always open with ``any_time``)."""
        spec = spec_of(campaign)
        return spec.model_copy(update={"window": Window.always()}) if self.any_time else spec

    def serves(self, campaign_id: int | None) -> sa.ColumnElement[bool]:
        """A condition on a campaign id column: true for the campaigns this runtime serves."""
        return sa.true() if self.only is None else col(campaign_id).in_(self.only)

    def account_limit(self, provider: str) -> float:
        """The provider account's requests per second, as configured or documented."""
        return account_limit(provider, self.settings.provider_settings(provider))

    def concurrency_cap(self, provider: str) -> int | None:
        """How many calls may be in progress at once on the provider account (None: no cap)."""
        return self.settings.provider_settings(provider).max_concurrent

    def rate_limit(self, provider: str) -> float:
        """The provider account's calls per second, less the safety margin."""
        return self.account_limit(provider) * (1 - self.settings.pacing_margin)

    def provider_bucket(self, provider: str) -> Bucket:
        """The account-wide bucket every request to ``provider`` draws from."""
        return Bucket(f"provider:{provider}", self.rate_limit(provider))

    def provider_gate(self, provider: str) -> Gate:
        """The last check before a request leaves: one interval of the account's bucket since the
        last (with a tolerance of a quarter of the time the margin leaves free in each second), and
        no more requests out than the limit allows in one second."""
        limit, interval = self.account_limit(provider), self.provider_bucket(provider).interval
        return Gate(
            f"provider:{provider}",
            interval,
            permits=max(1, math.floor(limit)),
            tolerance=(interval * limit - 1.0) / 4,  # the margin's free time: 0.02 / 0.98 s at 2 %
            transit=self.settings.pacing_transit,
        )

    def buckets(self, campaign: Campaign, spec: CampaignSpec) -> list[Bucket]:
        buckets = [self.provider_bucket(campaign.provider)]
        if spec.pacing.calls_per_second:
            rate = spec.pacing.calls_per_second * (1 - self.settings.pacing_margin)
            buckets.append(Bucket(f"campaign:{campaign.id}", rate))
        return buckets


KEEPALIVE_SECONDS = 2.0
"""How long an idle connection to a provider is kept for the next request. Below the 5 s after
which many servers (uvicorn's and Apache's defaults) close one: a request sent on a connection
the server is closing is lost ("Server disconnected without sending a response"), and, as it may
have been received, its call is left for reconciliation instead of being placed (the network
test with a jittered provider saw one with httpx's 5 s)."""


def http_client(settings: Settings, *, connect: float = 5.0) -> httpx.Client:
    """The client for providers' APIs; ``connect``: the longest a new connection may take."""
    timeout = httpx.Timeout(settings.http_timeout, connect=min(connect, settings.http_timeout))
    limits = httpx.Limits(
        max_connections=100, max_keepalive_connections=50, keepalive_expiry=KEEPALIVE_SECONDS
    )
    return httpx.Client(timeout=timeout, limits=limits)


@lru_cache(maxsize=256)
def _parsed(spec_json: str) -> CampaignSpec:
    return CampaignSpec.model_validate_json(spec_json)


def spec_of(campaign: Campaign) -> CampaignSpec:
    """The campaign's validated spec (parsed once per distinct spec in this process)."""
    return spec_from(campaign.spec)


def spec_from(spec: dict[str, Any]) -> CampaignSpec:
    """A campaign's spec column, validated (once per distinct spec in this process). Its keys keep
    their order: a flow's steps are listed as the file wrote them (the export's columns follow)."""
    return _parsed(json.dumps(spec))
