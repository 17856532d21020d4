"""The command line: one clear line and a non-zero exit on bad input; the quickstart works."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dialer.cli import main
from tests.e2e import write_campaign


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    return {"DIALER_DATABASE_URL": sqlite_url}


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["campaign", "create", "missing.toml"], "Error: missing.toml: no such file"),
        (
            ["import", "contacts.csv", "--campaign", "nope"],
            "Error: no campaign named 'nope' (see `dialer campaign list`)",
        ),
        (["campaign", "start", "nope"], "Error: no campaign named 'nope' (see `dialer campaign list`)"),
        (
            ["export", "nope", "--out", "x.csv"],
            "Error: no campaign named 'nope' (see `dialer campaign list`)",
        ),
        (["status", "nope"], "Error: no campaign named 'nope' (see `dialer campaign list`)"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_1(env: dict[str, str], args: list[str], message: str) -> None:
    code, output = run(env, *args)
    assert (code, output.strip()) == (1, message)


def test_a_bad_campaign_file_names_the_file_and_field(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(write_campaign(tmp_path).read_text().replace('delay = "2.0s"', 'delay = "later"'))
    code, output = run(env, "campaign", "create", str(path))
    assert code == 1
    hint = "(use seconds or a number with ms, s, m, h or d)"
    assert output.strip() == f"Error: {path}: retry.delay: not a duration: 'later' {hint}"


def test_a_database_without_tables_says_what_to_run(tmp_path: Path) -> None:
    code, output = run({"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}, "campaign", "list")
    assert (code, output.strip()) == (
        1,
        "Error: database: the database has no tables yet: run `dialer db upgrade`",
    )


def test_starting_twice_and_starting_empty_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    assert run(env, "campaign", "start", "e2e") == (
        1,
        "Error: campaign 'e2e' has no contacts: import a CSV first\n",
    )
    (tmp_path / "c.csv").write_text("phone,first_name\n+12125550106,Ada\n")
    assert run(env, "import", str(tmp_path / "c.csv"), "--campaign", "e2e")[0] == 0
    assert run(env, "campaign", "start", "e2e") == (0, "campaign e2e is running\n")
    assert run(env, "campaign", "start", "e2e") == (1, "Error: campaign 'e2e' is running: cannot start it\n")


@pytest.mark.timeout(90)
def test_quickstart_runs_the_example_to_a_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = run({}, "quickstart")
    assert code == 0, output
    assert "imported 60 contacts, 2 row(s) rejected" in output
    results = pd.read_csv(tmp_path / "quickstart" / "results.csv", dtype=str, keep_default_na=False)
    assert len(results) == 60
    assert set(results["result"]) == {"dtmf_answered", "reached", "exhausted"}
    assert (results["attempts"].astype(int) >= 1).all()
    assert results["dtmf_choice"].value_counts().to_dict() == {"confirm": 24, "cancel": 12, "": 24}
