"""CM.com as its documents and its official .NET SDK describe it."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from campaigns.spec import Question
from dialer.errors import ProviderRejected
from dialer.providers import cm
from dialer.providers.base import Webhook
from dialer.providers.client import ProviderClient
from dialer.settings import CmSettings, Settings
from dialer.simulators.base import Script
from dialer.simulators.cm import ssml_problem
from tests.e2e import campaign_text, refusal
from tests.providers.live import call, live
from tests.providers.test_vonage import order

QUEUED = {"type": "call-queued", "call-id": "c-1", "instruction-id": "x", "success": True}


@pytest.mark.parametrize("answer", [QUEUED, [QUEUED]], ids=["one object (SDK)", "an array (documents)"])
def test_the_answer_is_read_as_one_object_or_an_array(answer: Any) -> None:
    assert cm.parse_call(httpx.Response(200, json=answer)) == "c-1"


@pytest.mark.parametrize(
    "answer",
    [
        QUEUED | {"success": False, "error": "Invalid callee"},
        [QUEUED | {"success": False, "error": "Invalid callee"}],
    ],
)
def test_a_refusal_is_read_in_either_shape(answer: Any) -> None:
    with pytest.raises(ProviderRejected, match="Invalid callee"):
        cm.parse_call(httpx.Response(200, json=answer))


def _callback(result: dict[str, Any]) -> Webhook:
    body = {"type": "dtmf-finished", "call-id": "c-1", "result": result}
    return Webhook(kind="callback", method="POST", headers={}, query={}, body=json.dumps(body).encode())


def test_an_alphanumeric_sip_code_is_read_not_refused() -> None:
    finished = cm.parse_webhook(
        _callback({"code": 10, "description": "finished", "sip-disconnect-code": "BYE"})
    )
    assert finished.status == "completed"
    rejected = cm.parse_webhook(
        _callback(
            {
                "code": 12,
                "description": "rejected",
                "sip-disconnect-code": "BYE",
                "sip-disconnect-reason": "x",
            }
        )
    )
    assert (rejected.status, rejected.reason) == ("rejected", "rejected (SIP BYE x)")
    busy = cm.parse_webhook(_callback({"code": 12, "description": "rejected", "sip-disconnect-code": 486}))
    assert busy.status == "busy"


def test_a_finished_call_with_bye_is_recorded_through_the_receiver(settings: Settings) -> None:
    with live("cm", settings) as deployment:
        called = call(deployment, campaign_text("cm"), "+12125550106", Script("answered", "1"))
    assert called.attempt.status == "completed" and called.contact.result == "dtmf_answered"
    payload = json.loads(called.events[-1].payload)
    assert payload["result"]["sip-disconnect-code"] == "BYE"  # as CM.com's example shows it


@pytest.mark.parametrize(("voice", "gender"), [(None, "Female"), ("male", "Male"), ("Female", "Female")])
def test_the_voice_is_sent_as_cms_gender(voice: str | None, gender: str) -> None:
    body = json.loads(cm.build_call(order(voice=voice), CmSettings()).content)
    assert body["voice"]["gender"] == gender


def test_the_terminator_is_sent_as_the_question_says() -> None:
    question = Question(prompt="Press 1", terminator="*")
    body = json.loads(cm.build_call(order(question=question), CmSettings()).content)
    assert body["terminators"] == "*"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"voice": "Amy"}, "message.voice: CM.com's voice is a gender, Male or Female, not 'Amy'"),
        ({"terminator": ""}, "question.terminator: CM.com always ends input on a key"),
        ({"caller_id": "hello"}, "caller_id: 'hello' is not a valid number in E.164 form"),
        ({"long": 751}, "message.text: CM.com's Notification prompt holds at most 750 characters"),
    ],
)
def test_what_cm_would_refuse_is_refused_at_create(changes: dict[str, Any], problem: str) -> None:
    text = campaign_text("cm")
    if "voice" in changes:
        text = text.replace("[message]\n", f'[message]\nvoice = "{changes["voice"]}"\n')
    if "terminator" in changes:
        text = text.replace('prompt = "Press 1', 'terminator = ""\nprompt = "Press 1')
    if "caller_id" in changes:
        text = text.replace('caller_id = "+14155550100"', 'caller_id = "hello"')
    if "long" in changes:
        text = re.sub(r"\[question\].*?(?=\[retry\])", "", text, flags=re.S)
        text = text.replace(
            'text = "Hello {first_name}, this is a reminder."', f'text = "{"x" * changes["long"]}"'
        )
    assert problem in refusal(text)


def test_a_notification_longer_than_750_characters_is_refused_by_the_simulator_and_before_sending(
    settings: Settings,
) -> None:
    long = order(text="x" * 751, question=None)
    with pytest.raises(ProviderRejected, match=r"751 characters.*at most 750"):
        cm.build_call(long, settings.cm)
    with live("cm", settings) as deployment:
        request = cm.build_call(order(text="x" * 700, question=None), deployment.settings.cm)
        body = json.loads(request.content) | {"prompt": "x" * 751}
        token = {"X-CM-PRODUCTTOKEN": request.headers["X-CM-PRODUCTTOKEN"]}
        refused = httpx.post(request.url, json=body, headers=token)
        accepted = ProviderClient(deployment.runtime.http).place(
            cm.PROVIDER, deployment.settings.cm, order(text="x" * 750, question=None)
        )
    assert refused.status_code == 400 and "between 1 and 750" in refused.json()["message"]
    assert accepted


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            {"voice": {"language": "en-US", "gender": "Amy", "number": 1}},
            400,
            "voice.gender must be Male or Female",
        ),
        ({"voice": {"language": "en-US", "gender": 1, "number": 1}}, 200, None),  # the SDK's integer
        ({"terminators": ""}, 400, "terminators must be one or more of the keys"),
        ({"callees": ["+12125550106", "+12125550107"]}, 200, None),
    ],
)
def test_the_simulator_checks_cms_fields_and_answers_in_both_shapes(
    settings: Settings, change: dict[str, Any], status: int, message: str | None
) -> None:
    with live("cm", settings) as deployment:
        request = cm.build_call(order(), deployment.settings.cm)
        body = json.loads(request.content) | change
        if "callees" in change:
            del body["callee"]
        token = {"X-CM-PRODUCTTOKEN": request.headers["X-CM-PRODUCTTOKEN"]}
        answer = httpx.post(request.url, json=body, headers=token)
    assert answer.status_code == status
    if message:
        assert message in answer.json()["message"]
    elif "callees" in change:
        assert [event["callee"] for event in answer.json()] == change["callees"]  # an array
    else:
        assert answer.json()["success"] is True  # one object for one callee


def test_ssml_with_a_question_is_one_well_formed_document_the_simulator_takes(settings: Settings) -> None:
    question = Question(prompt="Press 1 <break time='500ms'/> to confirm", choices={"1": "yes"})
    call = order(
        text="<speak>Hello {name} &amp; family</speak>",
        ssml=True,
        question=question,
        variables={"name": "A&B"},
    )
    with live("cm", settings) as deployment, httpx.Client() as http:
        request = cm.build_call(call, deployment.settings.cm)
        body = json.loads(request.content)
        taken = http.send(request)
        joined = body | {"prompt": "<speak>Hello</speak> Press 1"}  # as the adapter used to join them
        token = {"X-CM-PRODUCTTOKEN": request.headers["X-CM-PRODUCTTOKEN"]}
        refused = http.post(str(request.url), json=joined, headers=token)
    assert (
        body["prompt"] == "<speak>Hello A&amp;B &amp; family Press 1 <break time='500ms'/> to confirm</speak>"
    )
    assert body["valid-prompt"] == "<speak>Thank you. Goodbye.</speak>"
    assert ssml_problem(body["prompt"]) is None and ssml_problem(body["valid-prompt"]) is None
    assert taken.status_code == 200 and taken.json()["success"] is True
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("prompt is not valid SSML: not well-formed XML")
