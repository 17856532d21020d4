"""Cequens: every guess about its undocumented call API in one place, and a 404 that names it."""

from __future__ import annotations

import json

import httpx
import pytest

from dialer.errors import ProviderSetupError
from dialer.providers import cequens
from dialer.providers.base import Webhook
from dialer.providers.client import ProviderClient
from dialer.settings import Settings
from tests.providers.live import live
from tests.providers.test_vonage import order


def test_a_404_on_the_call_path_names_the_setting_to_change(settings: Settings) -> None:
    with live("cequens", settings) as deployment:
        wrong = deployment.settings.cequens.model_copy(update={"call_path": "/voice/v2/call"})
        with pytest.raises(ProviderSetupError) as caught:
            ProviderClient(deployment.runtime.http).place(cequens.PROVIDER, wrong, order())
    assert "answered 404" in str(caught.value)
    assert "DIALER_CEQUENS__CALL_PATH" in str(caught.value)
    assert "BASE_URL" not in str(caught.value)


@pytest.mark.parametrize(
    "answer",
    [
        {"replyCode": 0, "data": {"callId": "c-1"}},
        {"replyCode": 0, "data": {"call_id": "c-1"}},
        {"replyCode": "0", "data": {"id": "c-1"}},
        {"callId": "c-1"},
    ],
)
def test_the_call_id_is_found_wherever_the_guesses_allow(answer: dict[str, object]) -> None:
    assert cequens.parse_call(httpx.Response(200, json=answer)) == "c-1"


def test_callbacks_are_read_under_each_guessed_name() -> None:
    status = cequens.parse_webhook(
        Webhook(
            kind="status",
            method="POST",
            headers={},
            query={},
            body=json.dumps({"call_id": "c-1", "callStatus": "Completed", "duration": "12.4"}).encode(),
        )
    )
    assert (status.call_id, status.status, status.duration) == ("c-1", "completed", 12)
    dtmf = cequens.parse_webhook(
        Webhook(kind="dtmf", method="GET", headers={}, query={"callId": "c-1", "dtmf": "2"}, body=b"")
    )
    assert (dtmf.call_id, dtmf.digits) == ("c-1", "2")
