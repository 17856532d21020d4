"""Call flows: the file's steps checked, and walked as a call would walk them."""

from __future__ import annotations

from importlib import resources

import pytest

from campaigns.flow import Answer, Flow, judge, one_question, segment, start
from campaigns.spec import CampaignSpec, SpecError, parse_campaign

HEAD = """
name = "survey"
provider = "vonage"
caller_id = "+14155550100"
"""


def survey() -> CampaignSpec:
    return parse_campaign((resources.files("dialer") / "examples" / "survey.toml").read_text())


def flow_of(steps: str) -> Flow:
    spec = parse_campaign(f"{HEAD}\n{_in_flow(steps)}")
    assert spec.flow is not None
    return spec.flow


def _in_flow(steps: str) -> str:
    """Steps written as ``[steps.x]`` tables, in the file's ``[flow]``."""
    return steps.replace("[steps.", "[flow.steps.")


def refusal(steps: str) -> tuple[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_campaign(f"{HEAD}\n{_in_flow(steps)}")
    return caught.value.field, caught.value.message


def names(part: object) -> list[str]:
    assert part is not None
    return [name for name, _ in part.steps]  # type: ignore[attr-defined]


def test_the_shipped_survey_parses_with_its_questions_and_actions() -> None:
    flow = survey().call_flow
    assert flow.first == "welcome"
    assert flow.questions() == ["rating", "problem", "comment", "recommend"]
    assert flow.required_columns() == {"first_name"}
    assert {name: step.action for name, step in flow.steps.items() if step.action} == {
        "comment": "record",
        "front_desk": "transfer",
        "stop": "optout",
    }


def test_a_call_starts_with_the_steps_up_to_the_first_question() -> None:
    flow = survey().call_flow
    first = start(flow)
    assert names(first) == ["welcome", "rating"]
    assert first.question is not None and first.question[0] == "rating"
    assert first.steps[0][1].text({"first_name": "Ada"}) == (
        "Hello Ada. This is Bright Smile Dental, with three short questions about your visit."
    )


@pytest.mark.parametrize(
    ("digits", "answer", "heard"),
    [
        ("1", Answer("1", "good", True), ["recommend"]),
        ("2", Answer("2", "poor", True), ["problem"]),
        ("0", Answer("0", None, True), ["front_desk"]),
        ("9", Answer("9", None, True), ["stop"]),
    ],
)
def test_each_answer_leads_where_the_file_says(digits: str, answer: Answer, heard: list[str]) -> None:
    turn = judge(survey().call_flow, "rating", digits, tries=1)
    assert turn.answer == answer
    assert names(turn.then) == heard


def test_silence_and_a_wrong_key_are_asked_again_then_lead_on() -> None:
    flow = survey().call_flow
    again = judge(flow, "rating", "", tries=1)
    assert again.answer is None
    assert again.then is not None and again.then.preface == "Sorry, I did not get that."
    assert again.then.tries == 2 and names(again.then) == ["rating"]
    wrong = judge(flow, "rating", "5", tries=2)
    assert wrong.answer == Answer("5", None, False)
    assert names(wrong.then) == ["goodbye"]
    assert judge(flow, "rating", "", tries=2).answer == Answer("", None, False)
    # Over the call, or the provider asked as often as it may: no more tries.
    assert judge(flow, "rating", "7", tries=1, final=True).answer == Answer("7", None, False)


def test_a_recording_is_heard_on_the_way_to_the_next_question() -> None:
    turn = judge(survey().call_flow, "problem", "3", tries=1)
    assert turn.answer == Answer("3", "cost", True)
    assert names(turn.then) == ["comment", "recommend"]


def test_repeat_asks_the_step_again_from_its_first_try_and_hangup_ends_the_call() -> None:
    flow = survey().call_flow
    again = judge(flow, "recommend", "*", tries=1)
    assert again.answer == Answer("*", None, True)
    assert names(again.then) == ["recommend"] and again.then is not None and again.then.preface is None
    assert names(judge(flow, "recommend", "1", tries=1).then) == ["goodbye"]
    hangs_up = flow_of('[steps.q]\nsay = "Press 1"\non = { "1" = "hangup" }')
    assert judge(hangs_up, "q", "1", tries=1).then is None


def test_a_free_answer_is_any_keys_that_fit_the_rules() -> None:
    flow = flow_of(
        '[steps.zip]\nsay = "Your zip code, then hash."\nnext = "bye"'
        '\nkeys = { min_digits = 5, max_digits = 5, pattern = "[0-9]+" }\n[steps.bye]\nsay = "Thanks"'
    )
    assert judge(flow, "zip", "94103", tries=1).answer == Answer("94103", None, True)
    assert judge(flow, "zip", "9410", tries=1).answer == Answer("9410", None, False)


def test_old_campaign_files_are_the_two_step_flow() -> None:
    spec = parse_campaign(
        HEAD
        + """
[message]
text = "Hello {first_name}"
language = "de-DE"
voice = 2
[question]
prompt = "Press 1 or 2"
pattern = "[12]"
attempts = 2
choices = { "1" = "yes", "2" = "no" }
"""
    )
    flow = spec.call_flow
    assert list(flow.steps) == ["message", "question", "final"]
    assert (flow.language, flow.voice) == ("de-DE", "2")
    assert names(start(flow)) == ["message", "question"]
    assert judge(flow, "question", "1", tries=1).answer == Answer("1", "yes", True)
    retry = judge(flow, "question", "3", tries=1).then
    assert retry is not None and retry.preface == "Sorry, that was not a valid choice."
    assert names(judge(flow, "question", "3", tries=2).then) == ["final"]
    assert spec.required_columns() == {"first_name"}


@pytest.mark.parametrize(
    ("steps", "field", "message"),
    [
        (
            '[steps.a]\nsay = "x"\nnext = "b"',
            "flow.steps.a.next",
            "no step is named 'b'",
        ),
        (
            '[steps.a]\nsay = "x"\n[steps.b]\nsay = "y"',
            "flow.steps.b",
            "no call reaches this step from 'a'",
        ),
        (
            '[steps.a]\nsay = "x"\nnext = "b"\n[steps.b]\nsay = "y"\nnext = "a"',
            "flow.steps.a.next",
            "loops back without asking anything (a -> b -> a): the call never ends",
        ),
        (
            '[steps.a]\nsay = "Press 1"\non = { "1" = "b" }\nno_input = "b"\ninvalid = "b"'
            '\n[steps.b]\nsay = "Again"\nnext = "a"',
            "flow.steps.a",
            "a loop with no way out: no answer from here ever ends the call",
        ),
        (
            '[steps.a]\nsay = "Press 1"\non = { "12" = "hangup" }',
            "flow.steps.a.on.12",
            "the answer '12' takes 1 key(s) (the step's keys)",
        ),
        (
            '[steps.a]\nsay = "Press 1"\nkeys = { pattern = "[1-3]" }\nchoices = { "4" = "four" }',
            "flow.steps.a.choices.4",
            "the answer '4' does not match the pattern '[1-3]' (the step's keys)",
        ),
        (
            '[steps.a]\nsay = "Press #"\non = { "#" = "hangup" }',
            "flow.steps.a.on.#",
            "the answer '#' holds '#', which ends the input (the step's keys)",
        ),
        (
            '[steps.a]\nsay = "Press 1"\non = { "1" = "b" }\nno_input = "b"\n[steps.b]\naction = "optout"',
            "flow.steps.a.no_input",
            "leads to the opt-out 'b', which only a key pressed for it may reach",
        ),
        (
            '[steps.a]\nsay = "x"\nnext = "repeat"',
            "flow.steps.a.next",
            "only an answer (on) can repeat the step",
        ),
        (
            '[steps.a]\nsay = "x"\nretry = "again"',
            "flow.steps.a.retry",
            "only a step that asks for keys (keys, choices or on) has it",
        ),
        (
            '[steps.a]\nsay = "x"\naction = "transfer"',
            "flow.steps.a.to",
            "a transfer needs exactly one of to (a number) or to_column",
        ),
        (
            '[steps.a]\nsay = "x"\naction = "optout"\nnext = "a"',
            "flow.steps.a.next",
            "a optout step ends the call: it has no next step",
        ),
        (
            '[steps.a]\nsay = "x"\nscope = "campaign"',
            "flow.steps.a.scope",
            "only a optout step has it",
        ),
        (
            '[steps.Hello]\nsay = "x"',
            "flow.steps.Hello",
            "a step name is lower case letters, digits and _, at most 40, starting with a letter,"
            " and not hangup or repeat",
        ),
        (
            '[steps.a]\nsay = "Hi {first name}"',
            "flow.steps.a.say",
            "placeholder {first name} must be a plain column name",
        ),
    ],
)
def test_a_flow_that_would_misbehave_is_refused_naming_the_field(
    steps: str, field: str, message: str
) -> None:
    assert refusal(steps) == (field, message)


def test_a_flow_and_a_message_together_are_refused() -> None:
    with pytest.raises(SpecError) as caught:
        parse_campaign(f'{HEAD}\n[message]\ntext = "x"\n[flow.steps.a]\nsay = "y"')
    assert caught.value.field == "flow"


def test_one_question_flows_are_what_single_instruction_providers_run() -> None:
    legacy = parse_campaign(
        HEAD + '[message]\ntext = "Hi"\n[question]\nprompt = "Press 1"\nchoices = { "1" = "yes" }'
    ).call_flow
    shape = one_question(legacy, "CM.com")
    assert not isinstance(shape, tuple)
    assert [name for name, _ in shape.intro] == ["message"]
    assert shape.question is not None and shape.question[0] == "question"
    assert shape.closing == "Thank you. Goodbye."
    optout = flow_of(
        '[steps.q]\nsay = "Press 1 to confirm, 9 to stop these calls"\non = { "1" = "bye", "9" = "stop" }'
        '\nno_input = "bye"\ninvalid = "bye"\n[steps.bye]\nsay = "Thank you."\n'
        '[steps.stop]\nsay = "Thank you."\naction = "optout"'
    )
    optout_shape = one_question(optout, "CM.com")
    assert not isinstance(optout_shape, tuple) and optout_shape.closing == "Thank you."
    assert one_question(survey().call_flow, "CM.com") == (
        "steps.recommend",
        "CM.com asks one question a call, and this step asks a second question",
    )


def test_a_segment_stops_at_the_first_step_that_asks_or_ends() -> None:
    flow = survey().call_flow
    assert names(segment(flow, "comment")) == ["comment", "recommend"]
    assert names(segment(flow, "front_desk")) == ["front_desk"]
    assert segment(flow, "goodbye").question is None
