"""What the Vonage adapter sends and what its simulator answers, against Vonage's published specs.

The create-call bodies are checked against ``specs/vonage/voice.yml`` (its create-call schema) and
their NCCOs against ``specs/vonage/ncco-schema.json``; the simulator's answers against the spec's
response schemas and the shared error bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from importlib import resources
from typing import Any

import httpx
import pytest

from campaigns.flow import Flow, segments
from campaigns.spec import CallOptions, Message, Question, legacy_flow, parse_campaign
from dialer.embedded import BackgroundServer
from dialer.providers import vonage
from dialer.settings import Settings
from dialer.simulators import simulator_app
from tests.providers.specs import error_schema, ncco_schema, problems, voice_schema
from tests.providers.test_vonage import order

QUESTION = Question(prompt="Press 1 or 2", pattern="[12]", choices={"1": "yes", "2": "no"})

#: Every kind of call a campaign can ask Vonage for.
ORDERS = {
    "tts": order(question=None),
    "tts with a voice style": order(question=None, voice="2", language="en-GB"),
    "ssml": order(question=None, ssml=True, text="Hello <break time='1s'/> Smith &amp; Sons"),
    "audio": order(text=None, audio_url="https://cdn.example/hello.mp3", question=None),
    "dtmf question": order(question=QUESTION),
    "dtmf question with an audio prompt": order(
        question=QUESTION.model_copy(update={"prompt_audio_url": "https://cdn.example/q.mp3"})
    ),
    "two-digit answer, no terminator": order(
        question=Question(prompt="Your code", min_digits=2, max_digits=2, terminator="")
    ),
    "hang up on machines": order(call=CallOptions(on_machine="hangup")),
    "leave a message after the beep": order(
        call=CallOptions(on_machine="leave_message", beep_timeout=timedelta(seconds=60))
    ),
    "maximum length": order(call=CallOptions(max_duration=timedelta(minutes=10))),
    "an extension dialled after the answer": order(extension="123"),
    "every option": order(
        ssml=True,
        voice="1",
        call=CallOptions(max_duration=timedelta(hours=24), on_machine="leave_message"),
    ),
}


@pytest.fixture(params=sorted(ORDERS))
def body(request: pytest.FixtureRequest, settings: Settings) -> dict[str, Any]:
    built = vonage.build_call(ORDERS[request.param], settings.vonage)
    content: dict[str, Any] = json.loads(built.content)
    return content


def test_every_create_call_body_matches_the_api_spec(body: dict[str, Any]) -> None:
    assert problems(voice_schema("CreateCallRequestNcco"), body) == []


def test_every_ncco_matches_the_ncco_schema(body: dict[str, Any]) -> None:
    assert problems(ncco_schema(), body["ncco"]) == []


def _survey() -> Flow:
    text = (resources.files("dialer") / "examples" / "survey.toml").read_text()
    return parse_campaign(text).call_flow


@pytest.mark.parametrize(
    "flow",
    [
        pytest.param(legacy_flow(Message(text="Hi"), QUESTION), id="message and question"),
        pytest.param(_survey(), id="the shipped survey"),
    ],
)
def test_every_ncco_of_every_segment_of_a_flow_matches_the_ncco_schema(flow: Flow) -> None:
    """Each segment a call may run (its start, each question asked again, each answer's next
    step) as the NCCO the receiver answers with."""
    call = order(flow=flow, voice="2", variables={"first_name": "Ada"})
    nccos = [vonage.segment_ncco(part, call, seq) for seq, part in enumerate(segments(flow))]
    assert len(nccos) > 3
    for ncco in nccos:
        assert ncco and problems(ncco_schema(), ncco) == [], ncco
    actions = {action["action"] for ncco in nccos for action in ncco}
    assert actions >= (
        {"talk", "input"}
        if flow.steps.keys() == {"message", "question", "final"}
        else {"talk", "input", "record", "connect"}
    )


def test_the_ncco_that_leaves_a_message_matches_the_ncco_schema() -> None:
    call = order(text="Hello {name}", ssml=True, voice="3", variables={"name": "A & B"})
    reply = vonage.reply_to_machine(call)
    spoken = "<speak>Hello A &amp; B</speak>"
    assert reply == [{"action": "talk", "text": spoken, "language": "en-US", "style": 3}]
    assert problems(ncco_schema(), reply) == []


def test_the_schemas_are_strict_enough_to_catch_a_wrong_body(settings: Settings) -> None:
    """The checks above could not pass a body Vonage would refuse."""
    body = json.loads(vonage.build_call(order(), settings.vonage).content)
    wrong = body | {"to": [{"type": "phone", "number": "1234567890123456"}], "length_timer": 90000}
    wrong["ncco"] = [*body["ncco"][:1], {"action": "talk"}]
    assert len(problems(voice_schema("CreateCallRequestNcco"), wrong)) >= 2
    assert problems(ncco_schema(), wrong["ncco"])


# -- the simulator's answers ----------------------------------------------------------------------


@pytest.fixture
def simulator(settings: Settings) -> Iterator[BackgroundServer]:
    with BackgroundServer(simulator_app("vonage", settings, rate_limit=50, time_scale=0.01)) as server:
        yield server


def _client(settings: Settings, url: str) -> httpx.Client:
    token = vonage.api_token(settings.vonage)
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})


def test_the_simulators_answers_match_the_response_schemas(
    settings: Settings, simulator: BackgroundServer
) -> None:
    long_call = order(question=None, text="A long message. " * 60)  # still talking while asked
    request = vonage.build_call(long_call, settings.vonage.model_copy(update={"base_url": simulator.url}))
    with _client(settings, simulator.url) as client:
        created = client.send(request)
        assert created.status_code == 201
        assert problems(voice_schema("CreateCallResponse"), created.json()) == []
        call = created.json()["uuid"]
        answers = {
            "GetCallResponse": client.get(f"/v1/calls/{call}"),
            "GetCallsResponse": client.get("/v1/calls", params={"page_size": 1}),
            "StartTalkResponse": client.put(
                f"/v1/calls/{call}/talk", json={"text": "Hi", "language": "en-GB"}
            ),
            "StopTalkResponse": client.delete(f"/v1/calls/{call}/talk"),
            "StartStreamResponse": client.put(
                f"/v1/calls/{call}/stream", json={"stream_url": ["https://x.example/a.mp3"], "loop": 2}
            ),
            "StopStreamResponse": client.delete(f"/v1/calls/{call}/stream"),
            "DTMFResponse": client.put(f"/v1/calls/{call}/dtmf", json={"digits": "1713"}),
        }
        for schema, answer in answers.items():
            assert answer.status_code == 200, (schema, answer.text)
            assert problems(voice_schema(schema), answer.json()) == [], schema
        assert client.put(f"/v1/calls/{call}", json={"action": "hangup"}).status_code == 204


def test_the_simulators_errors_match_the_shared_error_bodies(
    settings: Settings, simulator: BackgroundServer
) -> None:
    unauthorised = httpx.get(f"{simulator.url}/v1/calls", headers={"Authorization": "Bearer x.y.z"})
    assert unauthorised.status_code == 401
    assert problems(error_schema("BadCredentialsError"), unauthorised.json()) == []
    with _client(settings, simulator.url) as client:
        missing = client.get("/v1/calls/63f61863-4a51-4f6b-86e1-46edebcf9356")
        invalid = client.post("/v1/calls", json={"to": [{"type": "phone", "number": "12125550106"}]})
    assert missing.status_code == 404
    assert problems(error_schema("NotFoundError"), missing.json()) == []
    assert invalid.status_code == 400
    assert problems(error_schema("DefaultError"), invalid.json()) == []
    assert invalid.json()["invalid_parameters"] == [
        {"name": "from", "reason": "give exactly one of from or random_from_number: true"}
    ]
