"""Trying a flow before the campaign, through the CLI: `campaign try` in the terminal, and
`campaign call` to the operator's own number (through the simulator); and fetching recordings."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import select

from dialer import db
from dialer.cli import main
from dialer.dispatch import place_call
from dialer.models import Campaign, DncEntry
from dialer.operations import change_status, set_provider
from dialer.settings import Settings, get_settings
from dialer.simulators.base import Script
from tests.dialer.factories import NOW, campaign_with_contacts, queued_attempts
from tests.providers.live import live, when_done

SURVEY = resources.files("dialer") / "examples" / "survey.toml"


def run(env: dict[str, str], *args: str, given: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env, input=given)
    return result.exit_code, result.output


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    env = {"DIALER_DATABASE_URL": sqlite_url}
    with resources.as_file(SURVEY) as survey:
        assert run(env, "campaign", "create", str(survey))[0] == 0
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,first_name\n+12125550106,Ada\n+12125550107,Ben\n")
    assert run(env, "import", str(contacts), "--campaign", "patient-survey")[0] == 0
    return env


def test_try_walks_the_flow_as_the_callee_hears_it_with_the_keys_given(env: dict[str, str]) -> None:
    code, output = run(
        env, "campaign", "try", "patient-survey", "--contact", "+12125550107", "--keys", "5,2,3"
    )
    assert code == 0, output
    lines = output.splitlines()
    assert lines[1] == (
        "welcome: Hello Ben. This is Bright Smile Dental, with three short questions about your visit."
    )
    assert "  Sorry, I did not get that." in lines  # 5 is no answer: asked again after the retry
    assert "  [answer kept: rating = poor]" in lines
    assert "  [answer kept: problem = cost]" in lines
    assert any(line.startswith("  [a tone; the callee's voice is recorded, up to 60 s") for line in lines)
    assert lines[-1] == "[the callee hangs up]"  # no keys left for the last question


def test_try_takes_the_keys_typed_and_shows_an_opt_out_and_a_transfer(env: dict[str, str]) -> None:
    code, output = run(env, "campaign", "try", "patient-survey", given="9\n")
    assert code == 0, output
    assert "[+12125550106 goes on every campaign's do-not-call list; the call ends]" in output
    code, output = run(env, "campaign", "try", "patient-survey", given="0\n")
    assert "[the callee is connected to +14155550199, ringing up to 30 s]" in output
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        assert session.exec(select(DncEntry)).all() == []  # a try places nothing, lists nothing


@pytest.mark.timeout(120)
def test_a_test_call_through_the_simulator_records_what_was_pressed_and_leaves_nothing(
    env: dict[str, str],
) -> None:
    code, output = run(
        env, "campaign", "call", "patient-survey", "--to", "(415) 555-0142", "--simulate", "--keys", "2,1,9"
    )
    assert code == 0, output
    tail = output.splitlines()[-5:]
    assert tail[0].startswith("call ") and ": completed, " in tail[0]
    assert tail[1:3] == ["  rating = poor", "  problem = waiting"]
    assert tail[3].startswith("  comment = http://127.0.0.1:") and "/v1/files/" in tail[3]
    assert tail[4] == "  recommend = 9 (not valid)"
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        names = [campaign.name for campaign in session.exec(select(Campaign)).all()]
    assert names == ["patient-survey"]  # the test call's campaign is gone, and the campaign untouched
    code, output = run(env, "campaign", "call", "patient-survey", "--to", "+14155550142", "--keys", "1")
    assert (code, output) == (1, "Error: --keys is for --simulate: on a real call you press them yourself\n")


@pytest.mark.timeout(60)
def test_recordings_are_fetched_once_with_the_accounts_credentials(
    settings: Settings, tmp_path: Path
) -> None:
    phone = "+12125550106"
    with live("vonage", settings, time_scale=0.02) as deployment:
        url = deployment.settings.database_url
        deployment.simulation.scripts[phone] = Script("answered", answers=("2", "1", "1"))
        text = SURVEY.read_text()
        campaign = campaign_with_contacts(url, [phone], text=text, name="patient-survey")
        (attempt,) = queued_attempts(url, campaign, 1)
        place_call(deployment.runtime, attempt.id or 0)
        ((_, answers),) = when_done(url)
        assert [answer.step for answer in answers] == ["rating", "problem", "comment", "recommend"]
        with db.session_scope(url) as session:  # since moved to another account, with no settings here
            change_status(session, name="patient-survey", action="pause", now=NOW)
            set_provider(session, name="patient-survey", provider="vonage.backup")
        account = deployment.settings.vonage
        assert account.private_key is not None
        env = {
            "DIALER_DATABASE_URL": url,
            "DIALER_VONAGE__BASE_URL": account.base_url,
            "DIALER_VONAGE__PRIVATE_KEY": account.private_key.get_secret_value(),
            "DIALER_VONAGE__APPLICATION_ID": account.application_id,
        }
        get_settings.cache_clear()
        out = tmp_path / "recordings"
        out.mkdir()
        first = run(env, "recordings", "patient-survey", "--out", str(out))
        again = run(env, "recordings", "patient-survey", "--out", str(out))
        get_settings.cache_clear()
    assert first == (0, f"fetched 1 recording(s) into {out}; 0 were there already\n")
    assert again == (0, f"fetched 0 recording(s) into {out}; 1 were there already\n")
    (saved,) = out.iterdir()
    assert saved.name == "12125550106-1-comment.mp3" and saved.read_bytes().startswith(b"ID3")
