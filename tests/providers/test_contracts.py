"""Every adapter against its provider's simulator, over real HTTP on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dialer.embedded import BackgroundServer
from dialer.errors import ProviderAuthError, ProviderRateLimited, ProviderRejected
from dialer.providers import PROVIDERS, get_provider
from dialer.providers.client import ProviderClient
from dialer.settings import Settings
from dialer.simulators import dev_credentials, simulator_app, simulator_urls
from tests.providers.test_vonage import order

#: Credentials the provider has never issued, per provider.
WRONG: dict[str, dict[str, Any]] = {
    "vonage": {"private_key": SecretStr(dev_credentials()["vonage"]["private_key"])},
    "cm": {"product_token": SecretStr("00000000-0000-0000-0000-000000000000")},
    "routee": {"application_secret": SecretStr("wrong")},
    "cequens": {"api_key": SecretStr("wrong")},
    "fractel": {"password": SecretStr("wrong")},
}
#: A call each provider's documents say it refuses, and the words of its refusal.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "vonage": ({"to": "+12"}, r"to\[0\]\.number: must be 7 to 15 digits"),
    "cm": ({"to": "+12"}, "Invalid callee"),
    "routee": ({"to": "+12"}, "to.phone must be a valid phone number"),
    "cequens": ({"to": "+12"}, "recipient is required in E.164 format"),
    "fractel": (
        {"text": None, "audio_url": "https://cdn.example/a.mp3"},
        "service_id must be the URL of a WAV file",
    ),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _pointed(settings: Settings, name: str, url: str, **changes: Any) -> Any:
    return getattr(settings, name).model_copy(update={**simulator_urls(name, url), **changes})


@pytest.fixture
def client() -> Iterator[ProviderClient]:
    with httpx.Client() as http:
        yield ProviderClient(http)


@pytest.fixture
def simulator(settings: Settings, provider_name: str) -> Iterator[BackgroundServer]:
    with BackgroundServer(simulator_app(provider_name, settings, rate_limit=2, time_scale=0.01)) as server:
        yield server


def test_a_valid_call_is_placed(
    settings: Settings, provider_name: str, simulator: BackgroundServer, client: ProviderClient
) -> None:
    call_id = client.place(
        get_provider(provider_name), _pointed(settings, provider_name, simulator.url), order()
    )
    log = httpx.get(f"{simulator.url}/_simulator/log").json()
    assert [p["call_id"] for p in log["placements"]] == [call_id]


def test_wrong_credentials_are_refused(
    settings: Settings, provider_name: str, simulator: BackgroundServer, client: ProviderClient
) -> None:
    wrong = _pointed(settings, provider_name, simulator.url, **WRONG[provider_name])
    with pytest.raises(ProviderAuthError):
        client.place(get_provider(provider_name), wrong, order())


def test_an_invalid_call_is_refused_with_the_reason(
    settings: Settings, provider_name: str, simulator: BackgroundServer, client: ProviderClient
) -> None:
    changes, reason = INVALID[provider_name]
    with pytest.raises(ProviderRejected, match=reason):
        client.place(
            get_provider(provider_name), _pointed(settings, provider_name, simulator.url), order(**changes)
        )


def test_calls_beyond_the_limit_get_the_providers_429(
    settings: Settings, provider_name: str, simulator: BackgroundServer, client: ProviderClient
) -> None:
    credentials = _pointed(settings, provider_name, simulator.url)
    provider = get_provider(provider_name)
    client.place(provider, credentials, order())
    client.place(provider, credentials, order())
    with pytest.raises(ProviderRateLimited):
        client.place(provider, credentials, order())


def test_the_callback_secret_travels_only_in_the_callback_urls(
    settings: Settings, provider_name: str
) -> None:
    """The token authenticates callbacks: a field the provider copies into records others read
    (CM.com's instruction-id, Cequens's metaData) carries the attempt's number instead."""
    secret = "s3cr3t-t0k3n-0f-th3-att3mpt"
    provider = get_provider(provider_name)
    url = f"http://127.0.0.1:9/webhooks/{provider_name}/{secret}"
    call = order(
        callback_url=url, reference="7", **({} if provider.capabilities.dtmf else {"question": None})
    )
    request = provider.build_call(call, getattr(settings, provider_name), "token")
    body = request.content.decode()
    urls = re.findall(r"https?://[^\"&\s]+", body)
    assert (secret in body) == provider.per_call_callbacks  # in the callback URLs of each call
    assert body.count(secret) == sum(url.count(secret) for url in urls)  # and nowhere else
    if provider_name == "cm":
        assert json.loads(body)["instruction-id"] == "7"
    if provider_name == "cequens":
        assert json.loads(body)["metaData"] == {"key": "attempt", "value": "7"}
