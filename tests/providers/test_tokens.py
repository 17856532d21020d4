"""Signed-in tokens: fetched once, reused until shortly before expiry, renewed after a 401."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest

from dialer.errors import ProviderUnavailable
from dialer.providers import cequens, fractel, routee
from dialer.providers.client import ProviderClient
from dialer.settings import Settings
from tests.providers.test_vonage import order


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_routee_token_is_cached_until_it_nearly_expires(settings: Settings) -> None:
    seen: list[httpx.Request] = []

    def routee_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/oauth/token":
            return httpx.Response(
                200, json={"access_token": f"t{len(seen)}", "token_type": "Bearer", "expires_in": 3600}
            )
        return httpx.Response(200, json={"trackingId": "track-1"})

    clock = Clock()
    client = ProviderClient(httpx.Client(transport=httpx.MockTransport(routee_api)), clock=clock)
    for _ in range(3):
        client.place(routee.PROVIDER, settings.routee, order())
    clock.now = 3600 - 30  # inside the renewal margin
    client.place(routee.PROVIDER, settings.routee, order())
    paths = [r.url.path for r in seen]
    assert paths == ["/oauth/token", *["/voice/conversation"] * 3, "/oauth/token", "/voice/conversation"]
    token_request = seen[0]
    assert dict(parse_qsl(token_request.content.decode())) == {"grant_type": "client_credentials"}
    assert settings.routee.application_secret is not None
    pair = f"{settings.routee.application_id}:{settings.routee.application_secret.get_secret_value()}"
    assert token_request.headers["authorization"] == f"Basic {base64.b64encode(pair.encode()).decode()}"
    assert seen[-1].headers["authorization"] == "Bearer t5"


def test_cequens_signs_in_again_when_a_call_answers_401(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    issued = int(time.time())

    def cequens_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/auth/v1/tokens/":
            token = jwt.encode({"iat": issued, "exp": issued + 600, "n": len(seen)}, "k" * 32, "HS256")
            return httpx.Response(200, json={"replyCode": 0, "data": {"access_token": token}})
        if len([r for r in seen if r.url.path != "/auth/v1/tokens/"]) == 1:
            return httpx.Response(401, json={"error": {"status": 401, "description": "token expired"}})
        return httpx.Response(200, json={"replyCode": 0, "data": {"callId": "call-7"}})

    client = ProviderClient(httpx.Client(transport=httpx.MockTransport(cequens_api)))
    assert client.place(cequens.PROVIDER, settings.cequens, order()) == "call-7"
    assert [r.url.path for r in seen] == [
        "/auth/v1/tokens/",
        "/voice/v1/calls",
        "/auth/v1/tokens/",
        "/voice/v1/calls",
    ]
    assert seen[1].headers["authorization"] != seen[3].headers["authorization"]
    assert json.loads(seen[0].content) == {
        "apiKey": settings.cequens.api_key.get_secret_value(),
        "userName": "dialer",
    }  # type: ignore[union-attr]


def test_cequens_token_lifetime_comes_from_its_exp() -> None:
    token = jwt.encode({"iat": 1000, "exp": 1900}, "k" * 32, "HS256")
    parsed = cequens.parse_sign_in(
        httpx.Response(200, json={"replyCode": 0, "data": {"access_token": token}})
    )
    assert parsed.lifetime == 900


def test_fractel_accepts_both_token_answers_and_sends_the_token_header(settings: Settings) -> None:
    for body in ({"authorization": {"token": "abc"}}, {"auth": {"token": "abc"}}):
        assert fractel.parse_sign_in(httpx.Response(201, json=body)).value == "abc"
    request = fractel.build_call(order(question=None), settings.fractel, "abc")
    assert request.headers["token"] == "abc"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"  # as the 2.4 spec
    assert dict(parse_qsl(request.content.decode())) == {
        "fonenumber": "4155550100",  # a 10-digit FoneNumber, as every published example
        "to": "12125550106",
        "service_type": "TTS",
        "service_id": "Hello Ada",
    }


def test_a_sign_in_that_times_out_is_retried_not_reconciled(settings: Settings) -> None:
    def slow_auth(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with httpx.Client(transport=httpx.MockTransport(slow_auth)) as http, pytest.raises(ProviderUnavailable):
        ProviderClient(http).place(routee.PROVIDER, settings.routee, order())
