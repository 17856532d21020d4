"""Cequens: every guess about its undocumented call API in one place, and a 404 that names it."""

from __future__ import annotations

import json

import httpx
import pytest

from dialer.errors import ProviderSetupError, ProviderTimeout, WebhookPayloadError
from dialer.providers import cequens
from dialer.providers.base import Webhook
from dialer.providers.client import ProviderClient
from dialer.settings import CequensSettings, Settings
from dialer.simulators.base import Script
from tests.e2e import campaign_text
from tests.providers.live import call, live
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


#: A shape of Cequens's call API none of our guesses matches: the simulator's own choice.
OWN_SHAPE = {
    "call_path": "/api/v2/voice/call",
    "call_id_field": "result.reference",
    "callback_id_field": "reference",
    "status_field": "call_state",
    "digits_field": "keys",
}


def test_a_shape_we_did_not_guess_fails_until_the_settings_say_where_things_are(settings: Settings) -> None:
    text = campaign_text("cequens")
    with live("cequens", settings, readings=OWN_SHAPE) as deployment:
        client, account = ProviderClient(deployment.runtime.http), deployment.settings.cequens
        with pytest.raises(ProviderSetupError, match="DIALER_CEQUENS__CALL_PATH"):
            client.place(cequens.PROVIDER, account, order())  # our path: a 404
        right_path = account.model_copy(update={"call_path": "/api/v2/voice/call"})
        with pytest.raises(ProviderTimeout, match="DIALER_CEQUENS__CALL_ID_FIELD"):
            client.place(cequens.PROVIDER, right_path, order())  # placed, its id where we did not look
    told = settings.cequens.model_copy(
        update={
            "call_path": "/api/v2/voice/call",
            "call_id_field": "result.reference",
            "callback_id_field": "reference",
            "status_field": "call_state",
            "digits_field": "keys",
        }
    )
    with live("cequens", settings.model_copy(update={"cequens": told}), readings=OWN_SHAPE) as deployment:
        called = call(deployment, text, "+12125550106", Script("answered", "1"))
    assert called.attempt.status == "completed" and called.attempt.duration is not None
    assert called.answer is not None and (called.answer.digits, called.answer.choice) == ("1", "confirm")
    assert called.contact.result == "dtmf_answered"


def test_the_fields_the_settings_name_are_the_only_ones_read() -> None:
    told = CequensSettings(call_id_field="result.reference", status_field="call_state")
    answer = httpx.Response(
        200, json={"replyCode": 0, "data": {"callId": "guessed"}, "result": {"reference": "c-9"}}
    )
    assert cequens.parse_call(answer, told) == "c-9"
    with pytest.raises(ProviderTimeout, match="DIALER_CEQUENS__CALL_ID_FIELD"):
        cequens.parse_call(httpx.Response(200, json={"replyCode": 0, "data": {"callId": "c-1"}}), told)
    body = json.dumps({"callId": "c-1", "status": "completed"}).encode()
    with pytest.raises(WebhookPayloadError, match="DIALER_CEQUENS__STATUS_FIELD"):
        cequens.parse_webhook(Webhook(kind="status", method="POST", headers={}, query={}, body=body), told)
