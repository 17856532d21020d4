"""The simulator answers like the documents say Vonage does, over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from dialer.embedded import BackgroundServer
from dialer.providers import vonage
from dialer.settings import Settings
from dialer.simulators import simulator_app
from dialer.simulators.base import Script, Simulation
from dialer.simulators.vonage import validate_create
from tests.providers.test_vonage import order
from tests.simulators.callbacks import Application, Received, application


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
    assert response.json()["title"] == "Invalid credentials supplied"


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"to": [{"type": "phone", "number": "+1212"}]}, "to[0].number"),
        ({"ringing_timer": "sixty"}, "ringing_timer"),
        ({"length_timer": 86401}, "length_timer"),
        (
            {"advanced_machine_detection": {"mode": "detect_beep", "beep_timeout": 29}},
            "advanced_machine_detection.beep_timeout",
        ),
        ({"ncco": [{"action": "talk", "text": "x", "level": "loud"}]}, "ncco[0].level"),
        ({"ncco": [{"action": "input", "dtmf": {"maxDigits": "4"}}]}, "ncco[0].dtmf.maxDigits"),
        ({"ncco": [{"action": "dance"}]}, "ncco[0].action"),
        ({"ncco": []}, "ncco"),
        ({"answer_url": ["https://x"]}, "ncco"),
        ({"ringing_timer": 121}, "ringing_timer"),
        ({"event_method": "PUT"}, "event_method"),
        # Wrongly typed, not only out of range: the API answers 400 with the reasons, never a 500.
        ({"ncco": [{"action": "talk", "text": "x", "language": ["en-US"]}]}, "ncco[0].language"),
        ({"ncco": [{"action": "input", "type": [{}]}]}, "ncco[0].type"),
        ({"ncco": [{"action": ["talk"]}]}, "ncco[0].action"),
        ({"machine_detection": {"continue": True}}, "machine_detection"),
        ({"event_method": ["POST"]}, "event_method"),
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


# -- calls as the reference describes them -----------------------------------------------------------


@pytest.fixture
def running(settings: Settings) -> Iterator[tuple[Simulation, str]]:
    app = simulator_app("vonage", settings, rate_limit=50, time_scale=0.01)
    with BackgroundServer(app) as server:
        yield app.state.simulation, server.url


def _call(settings: Settings, url: str, **body: Any) -> str:
    token = vonage.api_token(settings.vonage)
    request = {
        "to": [{"type": "phone", "number": "12125550106"}],
        "from": {"type": "phone", "number": "14155550100"},
    }
    response = httpx.post(
        f"{url}/v1/calls", json=request | body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


def _events(stand_in: Application) -> list[dict[str, Any]]:
    return [received.json() for received in stand_in.on("/event")]


def test_answer_url_is_fetched_with_the_call_and_its_ncco_run(
    settings: Settings, running: tuple[Simulation, str]
) -> None:
    _, url = running

    def answer(received: Received) -> Any:
        return (
            [{"action": "notify", "payload": {"step": "ran"}, "eventUrl": [f"{app_url}/notified"]}]
            if received.path == "/answer"
            else None
        )

    with application(answer) as (stand_in, app_url):
        call = _call(settings, url, answer_url=[f"{app_url}/answer"], event_url=[f"{app_url}/event"])
        notified = stand_in.wait_for(lambda: stand_in.on("/notified"))
    (fetched,) = stand_in.on("/answer")
    assert fetched.method == "GET"
    assert fetched.query == {
        "to": "12125550106",
        "from": "14155550100",
        "uuid": call,
        "conversation_uuid": fetched.query["conversation_uuid"],
    }
    assert notified[0].json() == {"step": "ran"}


def test_an_application_without_signing_gets_unsigned_callbacks(settings: Settings) -> None:
    unsigned = settings.model_copy(
        update={"vonage": settings.vonage.model_copy(update={"signature_secret": None})}
    )
    with (
        BackgroundServer(simulator_app("vonage", unsigned, rate_limit=50, time_scale=0.01)) as server,
        application() as (stand_in, app_url),
    ):
        _call(settings, server.url, ncco=[{"action": "talk", "text": "Hi"}], event_url=[f"{app_url}/event"])
        stand_in.wait_for(lambda: "completed" in [e["status"] for e in _events(stand_in)])
    assert all("authorization" not in received.headers for received in stand_in.on("/event"))


@pytest.mark.parametrize(
    ("keys", "dtmf", "expected"),
    [
        ("12#", {"maxDigits": 4, "submitOnHash": True, "timeOut": 3}, {"digits": "12", "timed_out": False}),
        ("1234", {"maxDigits": 2, "timeOut": 3}, {"digits": "12", "timed_out": False}),
        ("12", {"maxDigits": 4, "timeOut": 3}, {"digits": "12", "timed_out": True}),
        ("", {"maxDigits": 4, "timeOut": 2}, {"digits": "", "timed_out": True}),
    ],
)
def test_input_ends_on_max_digits_on_hash_or_after_its_timeout(
    settings: Settings,
    running: tuple[Simulation, str],
    keys: str,
    dtmf: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("answered", keys)
    with application() as (stand_in, app_url):
        ncco = [
            {"action": "talk", "text": "Your code?", "bargeIn": True},
            {"action": "input", "type": ["dtmf"], "dtmf": dtmf, "eventUrl": [f"{app_url}/input"]},
        ]
        _call(settings, url, ncco=ncco, event_url=[f"{app_url}/event"])
        (received,) = stand_in.wait_for(lambda: stand_in.on("/input"))
    assert received.json()["dtmf"] == expected


@pytest.mark.parametrize(("barge_in", "digits"), [(True, "1"), (False, "")])
def test_a_key_pressed_during_the_prompt_counts_only_if_the_prompt_lets_it_barge_in(
    settings: Settings, running: tuple[Simulation, str], barge_in: bool, digits: str
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("answered", "1", barge=True)  # keys a second into the prompt
    long_prompt = "Please listen carefully, as our options have changed. " * 5  # 18 s
    with application() as (stand_in, app_url):
        ncco = [
            {"action": "talk", "text": long_prompt, "bargeIn": barge_in},
            {"action": "input", "type": ["dtmf"], "dtmf": {"maxDigits": 1}, "eventUrl": [f"{app_url}/input"]},
        ]
        _call(settings, url, ncco=ncco, event_url=[f"{app_url}/event"])
        (received,) = stand_in.wait_for(lambda: stand_in.on("/input"))
    assert received.json()["dtmf"]["digits"] == digits


@pytest.mark.parametrize(
    ("detection", "expected"),
    [
        ({"machine_detection": "continue"}, ["machine", "completed"]),
        ({"machine_detection": "hangup"}, ["machine", "completed"]),
        (
            {"advanced_machine_detection": {"behavior": "continue", "mode": "default"}},
            ["machine", "machine:beep_start", "completed"],
        ),
        (
            {
                "advanced_machine_detection": {
                    "behavior": "continue",
                    "mode": "detect_beep",
                    "beep_timeout": 30,
                }
            },
            ["machine:beep_start", "completed"],
        ),
        ({"advanced_machine_detection": {"behavior": "hangup", "mode": "detect"}}, ["machine", "completed"]),
    ],
)
def test_machine_detection_reports_as_documented(
    settings: Settings, running: tuple[Simulation, str], detection: dict[str, Any], expected: list[str]
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("machine")
    with application() as (stand_in, app_url):
        _call(
            settings,
            url,
            ncco=[{"action": "talk", "text": "Hello"}],
            event_url=[f"{app_url}/event"],
            **detection,
        )
        stand_in.wait_for(lambda: "completed" in [e["status"] for e in _events(stand_in)])
    seen = [
        e["status"] + (f":{e['sub_state']}" if "sub_state" in e else "")
        for e in _events(stand_in)
        if e["status"] in ("machine", "human", "completed")
    ]
    assert seen == expected


def test_a_reply_to_the_beep_replaces_the_running_ncco(
    settings: Settings, running: tuple[Simulation, str]
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("machine")

    def after_beep(received: Received) -> Any:
        body = received.json() if received.path == "/event" else {}
        if body.get("sub_state") == "beep_start":
            return [{"action": "notify", "payload": {"left": "message"}, "eventUrl": [f"{app_url}/left"]}]
        return None

    with application(after_beep) as (stand_in, app_url):
        detection = {"behavior": "continue", "mode": "default"}
        question = [
            {"action": "talk", "text": "Press 1 to confirm. " * 20},
            {"action": "notify", "payload": {"asked": "question"}, "eventUrl": [f"{app_url}/asked"]},
        ]
        _call(
            settings, url, ncco=question, event_url=[f"{app_url}/event"], advanced_machine_detection=detection
        )
        stand_in.wait_for(lambda: stand_in.on("/left"))
        stand_in.wait_for(lambda: "completed" in [e["status"] for e in _events(stand_in)])
    assert stand_in.on("/asked") == []  # the rest of the question was never played


def test_calls_are_listed_with_filters_and_hal_paging(
    settings: Settings, running: tuple[Simulation, str]
) -> None:
    sim, url = running
    for number in ("12125550101", "12125550106", "12125550107"):
        sim.scripts["+" + number] = Script("busy" if number.endswith("1") else "answered")
    with application() as (stand_in, app_url):
        calls = [
            _call(
                settings,
                url,
                to=[{"type": "phone", "number": n}],
                ncco=[{"action": "talk", "text": "Hi"}],
                event_url=[f"{app_url}/event"],
            )
            for n in ("12125550101", "12125550106", "12125550107")
        ]
        stand_in.wait_for(lambda: [e["status"] for e in _events(stand_in)].count("completed") == 2)
    headers = {"Authorization": f"Bearer {vonage.api_token(settings.vonage)}"}
    first = httpx.get(f"{url}/v1/calls", params={"page_size": 2, "order": "asc"}, headers=headers).json()
    assert (first["count"], first["page_size"], first["record_index"]) == (3, 2, 0)
    assert [call["uuid"] for call in first["_embedded"]["calls"]] == calls[:2]
    assert set(first["_links"]) == {"self", "first", "last", "next"}
    following = httpx.get(
        f"{url}{first['_links']['next']['href'].replace('/calls', '/v1/calls')}", headers=headers
    ).json()
    assert [call["uuid"] for call in following["_embedded"]["calls"]] == calls[2:]
    assert set(following["_links"]) == {"self", "first", "last", "prev"}
    busy = httpx.get(f"{url}/v1/calls", params={"status": "busy"}, headers=headers).json()
    assert [call["uuid"] for call in busy["_embedded"]["calls"]] == calls[:1]
    newest = httpx.get(f"{url}/v1/calls", params={"order": "desc", "page_size": 1}, headers=headers).json()
    assert newest["_embedded"]["calls"][0]["uuid"] == calls[-1]
    refused = httpx.get(f"{url}/v1/calls", params={"page_size": 101}, headers=headers)
    assert refused.status_code == 400 and refused.json()["invalid_parameters"][0]["name"] == "page_size"


def test_a_hangup_before_the_answer_cancels_the_call(
    settings: Settings, running: tuple[Simulation, str]
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("answered", ring_seconds=30)
    headers = {"Authorization": f"Bearer {vonage.api_token(settings.vonage)}"}
    with application() as (stand_in, app_url):
        call = _call(settings, url, ncco=[{"action": "talk", "text": "Hi"}], event_url=[f"{app_url}/event"])
        stand_in.wait_for(lambda: "ringing" in [e["status"] for e in _events(stand_in)])
        assert (
            httpx.put(f"{url}/v1/calls/{call}", json={"action": "hangup"}, headers=headers).status_code == 204
        )
        stand_in.wait_for(lambda: "cancelled" in [e["status"] for e in _events(stand_in)])
    assert "answered" not in [e["status"] for e in _events(stand_in)]
    gone = httpx.put(f"{url}/v1/calls/{call}/talk", json={"text": "Hi"}, headers=headers)
    assert gone.status_code == 400  # not in progress any more


def test_a_wrongly_typed_modify_gets_400_naming_the_parameter(
    settings: Settings, simulator: BackgroundServer
) -> None:
    call = _create(settings, simulator.url).json()["uuid"]
    token = vonage.api_token(settings.vonage)
    answer = httpx.put(
        f"{simulator.url}/v1/calls/{call}",
        json={"action": ["hangup"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 400
    assert answer.json()["invalid_parameters"][0]["name"] == "action"


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_FIELDS = [
    "action", "text", "bargeIn", "loop", "level", "language", "style", "premium", "streamUrl", "type",
    "dtmf", "timeOut", "maxDigits", "submitOnHash", "eventUrl", "eventMethod", "format", "endOnKey",
    "endOnSilence", "beepStart", "endpoint", "from", "timeout", "limit", "machineDetection", "name",
    "payload", "conversationId", "mode", "speech", "channels", "split",
]  # fmt: skip


@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    action=st.sampled_from(["talk", "stream", "input", "record", "connect", "notify", "wait", "transfer"]),
    field=st.sampled_from(_FIELDS),
    value=_ANY_JSON,
    top=st.sampled_from(["to", "from", "event_url", "ringing_timer", "length_timer", "machine_detection"]),
    top_value=_ANY_JSON,
)
def test_any_value_of_any_field_is_answered_with_a_reason_never_an_error(
    settings: Settings, action: str, field: str, value: object, top: str, top_value: object
) -> None:
    body = json.loads(vonage.build_call(order(), settings.vonage).content)
    body["ncco"] = [{"action": action, field: value}]
    validate_create(body)  # a 400 with its reason, or a valid body: nothing raised
    validate_create(body | {top: top_value})


def test_an_invalid_ncco_in_reply_is_an_error_event_and_the_call_goes_on(
    settings: Settings, running: tuple[Simulation, str]
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("answered", "1")

    def answer(received: Received) -> Any:
        return [{"action": "talk"}] if received.path == "/input" else None  # no text: not an NCCO

    with application(answer) as (stand_in, app_url):
        ncco = [
            {"action": "talk", "text": "Press 1", "bargeIn": True},
            {"action": "input", "type": ["dtmf"], "dtmf": {"maxDigits": 1}, "eventUrl": [f"{app_url}/input"]},
        ]
        _call(settings, url, ncco=ncco, event_url=[f"{app_url}/event"])
        stand_in.wait_for(lambda: "completed" in [e.get("status") for e in _events(stand_in)])
    (error,) = [event for event in _events(stand_in) if "status" not in event]
    assert error["reason"].startswith("Syntax error in NCCO. Invalid value type or action.")
    assert set(error) == {"reason", "conversation_uuid", "timestamp"}


def test_a_transfer_moves_the_call_to_a_conversation_of_its_own_and_says_so(
    settings: Settings, running: tuple[Simulation, str]
) -> None:
    sim, url = running
    sim.scripts["+12125550106"] = Script("answered", None, talk_seconds=30)
    with application() as (stand_in, app_url):
        call = _call(
            settings,
            url,
            ncco=[{"action": "stream", "streamUrl": ["https://x/a.mp3"]}],
            event_url=[f"{app_url}/event"],
        )
        stand_in.wait_for(lambda: "answered" in [e.get("status") for e in _events(stand_in)])
        token = vonage.api_token(settings.vonage)
        moved = httpx.put(
            f"{url}/v1/calls/{call}",
            json={
                "action": "transfer",
                "destination": {"type": "ncco", "ncco": [{"action": "talk", "text": "Hi"}]},
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        transfer = stand_in.wait_for(lambda: [e for e in _events(stand_in) if e.get("type") == "transfer"])
    assert moved.status_code == 204
    assert "status" not in transfer[0] and transfer[0]["uuid"] == call
    assert transfer[0]["conversation_uuid_from"] != transfer[0]["conversation_uuid_to"]
