"""A campaign's pool of caller IDs: in turn or matched to the callee's area, capped per day,
checked against the provider, kept on each attempt, and the answer rate of each in the report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from campaigns.spec import parse_campaign
from dialer import db
from dialer.callers import choose, preferred
from dialer.cli import main
from dialer.models import Attempt
from tests.dialer.factories import NOW, campaign_with_contacts, queued_attempts
from tests.e2e import campaign_text, write_contacts

SF, NY, CHICAGO, BOSTON = "+14155550199", "+12125550199", "+13125550199", "+16175550199"


def pool(choose: str = "rotate", per_day: int | None = None, provider: str = "vonage") -> str:
    text = campaign_text(provider).replace('caller_id = "+14155550100"', f'caller_id = "{BOSTON}"')
    cap = f"per_day = {per_day}\n" if per_day else ""
    return text + f'\n[caller_ids]\nnumbers = ["{SF}", "{NY}", "{CHICAGO}"]\nchoose = "{choose}"\n{cap}'


def test_rotation_goes_round_the_pool_and_local_presence_matches_the_area() -> None:
    rotate, local = parse_campaign(pool()), parse_campaign(pool("local"))
    assert [preferred(rotate, to="+12125550123", turn=turn)[0] for turn in range(5)] == [
        SF,
        NY,
        CHICAGO,
        BOSTON,
        SF,
    ]
    assert preferred(local, to="+12125550123", turn=0) == [NY, BOSTON]  # New York, else the campaign's
    assert preferred(local, to="+13125550123", turn=7) == [CHICAGO, BOSTON]
    assert preferred(local, to="+447700900123", turn=0) == [BOSTON]  # no pool number in the UK


def test_no_caller_id_makes_more_than_its_calls_of_the_day(sqlite_url: str) -> None:
    spec = parse_campaign(pool("local", per_day=2))
    campaign = campaign_with_contacts(sqlite_url, ["+12125550101"], text=pool("local", per_day=2))
    (attempt,) = queued_attempts(sqlite_url, campaign, 1)
    with db.session_scope(sqlite_url) as session:
        for hours, caller_id in ((20, NY), (10, NY), (5, BOSTON)):
            session.add(
                Attempt(
                    campaign_id=campaign.id or 0,
                    contact_id=attempt.contact_id,
                    number=10 + hours,
                    provider="vonage",
                    callback_token=f"t{hours}",
                    status="completed",
                    caller_id=caller_id,
                    dispatched_at=NOW - timedelta(hours=hours),
                )
            )
    with db.session_scope(sqlite_url) as session:
        assert choose(session, spec, to="+12125550101", turn=0, now=NOW) == (BOSTON, None)  # NY is spent
        session.add(
            Attempt(
                campaign_id=campaign.id or 0,
                contact_id=attempt.contact_id,
                number=99,
                provider="vonage",
                callback_token="t99",
                status="completed",
                caller_id=BOSTON,
                dispatched_at=NOW - timedelta(hours=1),
            )
        )
        session.flush()
        # Both spent: the call waits until the oldest of their calls is a day old.
        assert choose(session, spec, to="+12125550101", turn=0, now=NOW) == (None, NOW + timedelta(hours=4))


def test_each_caller_id_is_checked_as_the_provider_takes_caller_ids(tmp_path: Path) -> None:
    env = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    path = tmp_path / "fractel.toml"
    path.write_text(
        pool(provider="fractel").replace(
            f'numbers = ["{SF}", "{NY}", "{CHICAGO}"]', 'numbers = ["+447700900123"]'
        )
    )
    result = CliRunner().invoke(main, ["campaign", "create", str(path)], env=env)
    assert result.exit_code == 1
    assert "caller_ids.numbers[0]: Fractel calls from one of the account's FoneNumbers" in result.output
    (tmp_path / "callers.txt").write_text(f"# our numbers\n{SF}\n\n(212) 555-0199  # New York\nnot one\n")
    text = campaign_text().replace('caller_id = "+14155550100"', 'caller_id = "+14155550100"\nregion = "US"')
    path.write_text(text + '\n[caller_ids]\nfile = "callers.txt"\n')
    result = CliRunner().invoke(main, ["campaign", "create", str(path)], env=env)
    assert result.exit_code == 1
    assert f"{tmp_path / 'callers.txt'}: line 5: 'not one': " in result.output


def test_a_campaign_calls_from_its_pool_and_reports_each_caller_ids_answer_rate(tmp_path: Path) -> None:
    env = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    invoke = CliRunner().invoke
    assert invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    (tmp_path / "callers.txt").write_text(f"{SF}\n{NY}\n{CHICAGO}\n")
    path = tmp_path / "campaign.toml"
    path.write_text(pool().replace(f'numbers = ["{SF}", "{NY}", "{CHICAGO}"]', 'file = "callers.txt"'))
    assert invoke(main, ["campaign", "create", str(path)], env=env).exit_code == 0
    contacts = str(write_contacts(tmp_path, 20))
    assert invoke(main, ["import", contacts, "--campaign", "e2e"], env=env).exit_code == 0
    result = invoke(main, ["run", "e2e", "--simulate", "--time-scale", "0.05"], env=env)
    assert result.exit_code == 0, result.output
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        used = dict(
            session.execute(sa.select(Attempt.caller_id, sa.func.count()).group_by(Attempt.caller_id)).all()
        )
    assert set(used) == {SF, NY, CHICAGO, BOSTON} and max(used.values()) - min(used.values()) <= 3
    report = invoke(main, ["report", "e2e"], env=env).output
    rows = [" ".join(line.replace("│", " ").split()) for line in report.splitlines()]
    assert "answer rate by caller ID" in rows
    assert any(row.startswith(f"{NY} ") and " answered (" in row for row in rows)
