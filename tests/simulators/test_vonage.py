"""The simulator answers like the documents say Vonage does, over real HTTP on loopback."""

from __future__ import annotations

import json

import httpx
import pytest

from dialer.embedded import BackgroundServer
from dialer.providers import vonage
from dialer.settings import Settings
from dialer.simulators import simulator_app
from tests.providers.test_vonage import order


@pytest.fixture
def simulator(settings: Settings) -> BackgroundServer:
    with BackgroundServer(simulator_app("vonage", settings, rate_limit=3, time_scale=0.01)) as server:
        yield server  # type: ignore[misc]


def _create(settings: Settings, url: str, **changes: object) -> httpx.Response:
    request = vonage.build_call(
        order(callback_url="http://127.0.0.1:9/x"), settings.vonage.model_copy(update={"base_url": url})
    )
    if changes:
        body = json.loads(request.content) | changes
        request = httpx.Request(
            "POST", request.url, json=body, headers={"Authorization": request.headers["Authorization"]}
        )
    with httpx.Client() as client:
        return client.send(request)


def test_a_valid_call_is_created(settings: Settings, simulator: BackgroundServer) -> None:
    response = _create(settings, simulator.url)
    assert response.status_code == 201
    assert response.json()["status"] == "started" and response.json()["conversation_uuid"].startswith("CON-")


def test_a_bad_jwt_gets_401(settings: Settings, simulator: BackgroundServer) -> None:
    response = httpx.post(f"{simulator.url}/v1/calls", json={}, headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
    assert response.json()["title"] == "Unauthorized"


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"to": [{"type": "phone", "number": "+1212"}]}, "to"),
        ({"ncco": []}, "ncco"),
        ({"answer_url": ["https://x"]}, "ncco"),
        ({"ringing_timer": 121}, "ringing_timer"),
        ({"event_method": "PUT"}, "event_method"),
    ],
)
def test_an_invalid_body_gets_400_naming_the_parameter(
    settings: Settings, simulator: BackgroundServer, change: dict[str, object], parameter: str
) -> None:
    response = _create(settings, simulator.url, **change)
    assert response.status_code == 400
    assert response.json()["invalid_parameters"][0]["name"] == parameter


def test_more_calls_than_the_limit_in_one_second_get_429(
    settings: Settings, simulator: BackgroundServer
) -> None:
    codes = [_create(settings, simulator.url).status_code for _ in range(5)]
    assert codes.count(201) == 3 and codes[3:] == [429, 429]
    log = httpx.get(f"{simulator.url}/_simulator/log").json()
    assert len(log["placements"]) == 3 and log["throttled"] == 2
