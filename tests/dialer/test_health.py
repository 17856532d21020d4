"""`dialer doctor`'s judgements that need no deployment: the clock, the public URL's form."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from dialer import health
from dialer.embedded import BackgroundServer
from dialer.providers import PROVIDERS
from dialer.settings import Settings
from dialer.simulators import simulator_app, simulator_urls


@pytest.mark.services
def test_a_host_clock_a_second_off_redis_fails(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert health.clock(client).state == "ok"
    skewed = health.clock(client, now=time.time() + 5)
    assert skewed.state == "FAIL"
    assert (
        skewed.detail.startswith("this host is 5.0")
        and "ahead of Redis's clock: sync it (NTP)" in skewed.detail
    )
    assert "behind" in health.clock(client, now=time.time() - 5).detail


@pytest.mark.services
def test_the_pump_mark_is_aged_by_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert health.pump_age(client) is None
    health.mark_pump(client)
    age = health.pump_age(client)
    assert age is not None and 0 <= age <= 1
    assert health.pumping(age, Settings(tick_seconds=1))
    assert not health.pumping(5.0, Settings(tick_seconds=1))
    assert not health.pumping(None, Settings(tick_seconds=1))


@pytest.mark.parametrize(
    ("public_url", "configured", "state", "says"),
    [
        ("https://dialer.example.com", True, "ok", "https://dialer.example.com"),
        ("https://dialer.example.com/prefix", True, "ok", "https://dialer.example.com/prefix"),
        ("http://dialer.example.com", True, "warn", "plain http"),
        ("http://127.0.0.1:8000", False, "warn", "no provider could call it back"),  # none set yet
        ("http://127.0.0.1:8000", True, "FAIL", "cm cannot call it back"),
        ("http://10.0.0.5:8000", True, "FAIL", "private network"),
        ("dialer.example.com", True, "FAIL", "not an http(s) URL"),
        ("ftp://dialer.example.com", True, "FAIL", "not an http(s) URL"),
        ("https://dialer.example.com/?token=1", True, "FAIL", "no query"),
    ],
)
def test_the_public_url_must_be_one_the_configured_providers_can_call(
    public_url: str, configured: bool, state: str, says: str
) -> None:
    cm = {"product_token": "00000000-0000-0000-0000-000000000000"} if configured else {}
    check = health.public_url(Settings(public_url=public_url, cm=cm))
    assert check.state == state and says in check.detail, check


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_providers_credentials_are_tried_without_placing_a_call(
    provider: str, credentials: dict[str, dict[str, str]]
) -> None:
    with BackgroundServer(simulator_app(provider, Settings(**credentials))) as simulator:
        account = credentials[provider] | simulator_urls(provider, simulator.url)
        with httpx.Client() as http:
            check = health.credentials(provider, Settings(**{provider: account}), http=http)
            secret = type(Settings().provider_settings(provider)).credential
            wrong = health.credentials(
                provider, Settings(**{provider: account | {secret: "wrong"}}), http=http
            )
        placed = httpx.get(f"{simulator.url}/_simulator/count").json()["placements"]
    assert placed == 0
    if provider == "cm":  # no request of CM.com's voice API places no call
        assert (check.state, wrong.state) == ("warn", "warn")
        assert check.detail == "credentials set, not tried: CM.com has no request that places no call"
        return
    method = "POST" if PROVIDERS[provider].sign_in else "GET"  # a sign-in, or Vonage's list of calls
    assert check.state == "ok" and check.detail.startswith(f"credentials accepted: {method} {simulator.url}/")
    assert wrong.state == "FAIL", wrong
    if provider != "vonage":  # there, "wrong" is no private key at all
        assert wrong.detail.startswith("credentials refused: "), wrong
