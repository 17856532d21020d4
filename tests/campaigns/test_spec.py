from __future__ import annotations

from datetime import timedelta
from importlib import resources

import pytest

from campaigns.spec import SpecError, parse_campaign, parse_duration, placeholders, render

MINIMAL = """
name = "reminders"
provider = "vonage"
caller_id = "+14155550100"
[message]
text = "Hello {first_name}"
"""


def test_the_shipped_example_parses_with_its_question_and_policy() -> None:
    text = (resources.files("dialer") / "examples" / "vonage.toml").read_text()
    spec = parse_campaign(text)
    assert spec.question is not None
    assert spec.question.choices == {"1": "confirm", "2": "cancel"}
    assert spec.retry.delay == timedelta(minutes=30)
    assert spec.required_columns() == {"first_name", "appointment"}


def test_defaults_fill_what_a_minimal_file_leaves_out() -> None:
    spec = parse_campaign(MINIMAL)
    assert spec.retry.max_attempts == 3
    assert spec.retry.retry_on == ("busy", "no_answer", "failed")
    assert (spec.window.start, spec.window.end) == ("09:00", "20:00")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            '[message]\ntext = "Hi"\naudio_url = "https://x/a.wav"',
            "message",
            "exactly one of text or audio_url",
        ),
        ('[retry]\ndelay = "soon"', "retry.delay", "not a duration"),
        ('[retry]\nretry_on = ["completed"]', "retry.retry_on.0", "Input should be"),
        ('[window]\nstart = "21:00"\nend = "09:00"', "window", "start must be before end"),
        ('[window]\ntimezone = "Mars/Olympus"', "window.timezone", "unknown time zone"),
        ('[question]\nprompt = "Press"\nchoices = { "12" = "x" }', "question", "choice '12'"),
        ('[question]\nprompt = "Press"\npattern = "[1"', "question.pattern", "not a regular expression"),
        ("[pacing]\ncolour = 3", "pacing.colour", "unknown field"),
        (
            '[call]\non_machine = "leave_message"\n[retry]\nretry_on = ["busy", "machine"]',
            "retry.retry_on",
            "calling again would leave another",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_problem(change: str, field: str, message: str) -> None:
    text = (
        MINIMAL.replace('[message]\ntext = "Hello {first_name}"', "")
        if change.startswith("[message]")
        else MINIMAL
    )
    with pytest.raises(SpecError) as caught:
        parse_campaign(text + "\n" + change + "\n")
    assert caught.value.field == field
    assert message in caught.value.message


def test_broken_toml_is_reported() -> None:
    with pytest.raises(SpecError, match="not valid TOML"):
        parse_campaign("name = ")


@pytest.mark.parametrize(
    ("value", "seconds"), [(90, 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("500ms", 0.5)]
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


def test_a_spec_survives_its_round_trip_through_the_database_json() -> None:
    spec = parse_campaign(MINIMAL)
    assert type(spec).model_validate_json(spec.model_dump_json()) == spec


def test_templates_render_from_contact_columns() -> None:
    assert placeholders("Hi {first_name}, see you {date}.") == {"first_name", "date"}
    assert render("Hi {first_name}", {"first_name": "Ada"}) == "Hi Ada"


def test_a_voice_given_as_a_number_is_taken_as_its_name() -> None:
    """TOML's `voice = 3` is the voice "3" (a [flow] reads its voice the same way: class Speech)."""
    spec = parse_campaign(MINIMAL.replace("[message]\n", "[message]\nvoice = 3\n"))
    assert spec.message is not None and spec.message.voice == "3"
