"""Prometheus metrics: what every process shares, read at each scrape; the receiver's own callbacks."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from dialer import db, metrics
from dialer.embedded import BackgroundServer
from dialer.models import Attempt
from dialer.receiver import create_app
from dialer.settings import Settings
from tests.dialer.factories import finished_campaign, queued_attempts
from tests.workers.deployment import free_port, wait_for


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the page at ``url``, by name and labels."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_calls_campaigns_and_the_receivers_callbacks_are_exposed(settings: Settings) -> None:
    url = settings.database_url
    campaign = finished_campaign(url)  # attempts: busy, completed, busy; contacts: 2 done, 1 pending
    (queued,) = queued_attempts(url, campaign, 1)
    with db.session_scope(url) as session:
        ringing = session.get(Attempt, queued.id)
        assert ringing is not None
        ringing.status = "ringing"
    settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    found, receiver = metrics.registry(settings)
    port = free_port()
    metrics.serve(found, host="127.0.0.1", port=port)
    with BackgroundServer(create_app(settings, receiver)) as web:
        for path in (
            "/webhooks/vonage/not-a-token/event",
            "/webhooks/vonage/nor-this/event",
            "/webhooks/x/y/z",
        ):
            httpx.post(web.url + path, json={"status": "answered"})
    samples = scrape(f"http://127.0.0.1:{port}/metrics")

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("dialer_database_up") == 1 and value("dialer_redis_up") == 0  # no Redis there
    assert value("dialer_calls_total", provider="vonage", outcome="busy") == 2
    assert value("dialer_calls_total", provider="vonage", outcome="completed") == 1
    assert value("dialer_calls_in_progress", provider="vonage", status="ringing") == 1
    assert value("dialer_campaign_contacts", campaign="e2e", state="done") == 2
    assert value("dialer_campaign_contacts", campaign="e2e", state="calling") == 1
    info = {"campaign": "e2e", "provider": "vonage", "status": "running", "route_cause": ""}
    assert value("dialer_campaign_info", **info) == 1
    assert value("dialer_webhooks_total", provider="vonage", code="401") == 2
    assert value("dialer_webhooks_total", provider="unknown", code="404") == 1  # not a label per made-up name
    assert value("dialer_webhook_seconds_count", provider="vonage") == 2
    assert 0 < (value("dialer_webhook_seconds_sum", provider="vonage") or 0) < 5


@pytest.mark.services
def test_the_workers_429s_are_counted_in_redis_and_dialer_serve_exposes_them_from_every_process(
    sqlite_url: str, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    for provider in ("routee", "routee", "vonage"):
        metrics.count_rate_limited(client, provider)
    web, port = free_port(), free_port()
    env = {"DIALER_DATABASE_URL": sqlite_url, "DIALER_REDIS_URL": redis_url, "PATH": ""}
    command = [sys.executable, "-m", "dialer", "serve", "--port", str(web), "--metrics-port", str(port)]
    command += ["--workers", "2"]  # two receiver processes: the metrics come from the parent
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            wait_for(f"http://127.0.0.1:{web}/health")
            refused = httpx.post(f"http://127.0.0.1:{web}/webhooks/vonage/not-a-token/event", json={})
            deadline = time.monotonic() + 10
            while True:
                try:
                    samples = scrape(f"http://127.0.0.1:{port}/metrics")
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        finally:
            server.terminate()
    assert samples[("dialer_provider_rate_limited_total", (("provider", "routee"),))] == 2
    assert samples[("dialer_provider_rate_limited_total", (("provider", "vonage"),))] == 1
    assert samples[("dialer_redis_up", ())] == 1 and samples[("dialer_database_up", ())] == 1
    assert refused.status_code == 401  # a receiver process answered
    assert not any(name.startswith("dialer_webhook") for name, _ in samples)  # per process: not served
