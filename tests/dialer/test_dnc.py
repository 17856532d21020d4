"""The do-not-call list through the command line."""

from __future__ import annotations

from pathlib import Path

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


def test_numbers_are_added_normalised_listed_and_removed(env: dict[str, str]) -> None:
    assert run(
        env, "dnc", "add", "(212) 555-0106", "+1 212 555 0107", "--region", "US", "--reason", "asked"
    ) == (
        0,
        "added 2 number(s) (0 already listed)\n",
    )
    assert run(env, "dnc", "add", "+12125550106")[1] == "added 0 number(s) (1 already listed)\n"
    code, listed = run(env, "dnc", "list")
    assert code == 0 and "+12125550106" in listed and "+12125550107" in listed and "asked" in listed
    assert run(env, "dnc", "remove", "+12125550106") == (0, "removed 1 number(s)\n")
    assert "+12125550106" not in run(env, "dnc", "list")[1]


def test_an_invalid_number_adds_nothing(env: dict[str, str]) -> None:
    code, output = run(env, "dnc", "add", "+12125550106", "call me")
    assert (code, output) == (
        1,
        "Error: 'call me': not a phone number\n",
    )
    assert run(env, "dnc", "list")[1] == "the list is empty\n"


def test_a_campaign_list_is_separate_from_the_global_one(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    assert run(env, "dnc", "add", "+12125550106", "--campaign", "e2e")[0] == 0
    assert "+12125550106" in run(env, "dnc", "list", "--campaign", "e2e")[1]
    assert run(env, "dnc", "list")[1] == "the list is empty\n"
    assert run(env, "dnc", "add", "+12125550106", "--campaign", "nope")[0] == 1


def test_a_file_with_bad_rows_adds_the_good_ones_and_lists_the_rest(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("phone,name\n+12125550106,Ada\n\nnot a number,Ben\n+12125550106,Ada again\n")
    code, output = run(env, "dnc", "import", str(path))
    rejects = tmp_path / "dnc.rejects.csv"
    assert (code, output) == (
        0,
        f"added 1 number(s) from {path}; 1 row(s) are not phone numbers, listed in {rejects}\n",
    )
    assert rejects.read_text().splitlines()[1:] == ["4,not a number,invalid phone number: not a phone number"]
    assert "+12125550106" in run(env, "dnc", "list")[1]
    # A list that cannot be written adds nothing (its rows would go unlisted).
    path.write_text("phone,name\n+12125550107,Ben\nnope,Cy\n")
    code, output = run(env, "dnc", "import", str(path), "--rejects", "/sys/dnc.rejects.csv")
    assert (code, output) == (
        1,
        "Error: /sys/dnc.rejects.csv: cannot be written: Permission denied; nothing was added (its"
        " rejected rows would go unlisted)\n",
    )
    assert "+12125550107" not in run(env, "dnc", "list")[1]
    # Nor over the list being read, even through a link to it.
    (tmp_path / "link.csv").symlink_to(path)
    code, output = run(env, "dnc", "import", str(path), "--rejects", str(tmp_path / "link.csv"))
    assert (code, output) == (
        1,
        f"Error: {tmp_path / 'link.csv'}: is the file being read: give --rejects another name; nothing was"
        " added (its rejected rows would go unlisted)\n",
    )
    assert path.read_text() == "phone,name\n+12125550107,Ben\nnope,Cy\n"
    long = tmp_path / ("r" * 300 + ".csv")
    code, output = run(env, "dnc", "import", str(path), "--rejects", str(long))
    assert (code, output) == (
        1,
        f"Error: {long}: cannot be written: File name too long; nothing was added (its rejected rows"
        " would go unlisted)\n",
    )
    assert "+12125550107" not in run(env, "dnc", "list")[1]
    # Again: the first list stays, the new one beside it.
    code, output = run(env, "dnc", "import", str(path))
    assert (code, output) == (
        0,
        f"added 1 number(s) from {path}; 1 row(s) are not phone numbers, listed in"
        f" {tmp_path / 'dnc.rejects-2.csv'}\n",
    )
    assert rejects.read_text().splitlines()[1:] == ["4,not a number,invalid phone number: not a phone number"]
    path.write_text("phone,name\n+12125550106,Ada\n+12125550108,Di\n")
    assert run(env, "dnc", "import", str(path)) == (0, f"added 1 number(s) from {path}\n")


def test_a_file_of_national_numbers_takes_the_campaigns_region_or_the_one_given(
    env: dict[str, str], tmp_path: Path
) -> None:
    campaign = write_campaign(tmp_path)
    campaign.write_text(campaign.read_text().replace("caller_id =", 'region = "US"\ncaller_id ='))
    assert run(env, "campaign", "create", str(campaign))[0] == 0
    path = tmp_path / "dnc.csv"
    path.write_text("Phone\n(212) 555-0106\n020 7946 0018\n")
    out = tmp_path / "refused.csv"
    code, output = run(env, "dnc", "import", str(path), "--campaign", "e2e", "--rejects", str(out))
    assert (code, output) == (
        0,
        f"added 1 number(s) from {path}; 1 row(s) are not phone numbers, listed in {out}\n",
    )
    assert "+12125550106" in run(env, "dnc", "list", "--campaign", "e2e")[1]
    assert run(env, "dnc", "import", str(path), "--region", "GB") == (
        0,
        f"added 1 number(s) from {path}; 1 row(s) are not phone numbers, listed in "
        f"{tmp_path / 'dnc.rejects.csv'}\n",
    )
    assert "+442079460018" in run(env, "dnc", "list")[1]
