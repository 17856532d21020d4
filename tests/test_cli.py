"""The command line: one clear line and a non-zero exit on bad input; the quickstart works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from dialer import db
from dialer.cli import main
from dialer.operations import get_campaign
from dialer.providers import PROVIDERS
from dialer.runtime import spec_of
from dialer.settings import get_settings
from tests.e2e import campaign_text, expected, write_campaign, write_contacts


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
    assert run(env, "campaign", "start", "e2e", "--wait", "0") == (0, "campaign e2e is running\n")
    assert run(env, "campaign", "start", "e2e") == (1, "Error: campaign 'e2e' is running: cannot start it\n")


@pytest.mark.parametrize(
    ("provider", "change", "message"),
    [
        ("fractel", "", "Fractel cannot do question (DTMF)"),
        (
            "routee",
            'audio_url = "https://cdn.example/hello.mp3"',
            "Routee cannot do message.audio_url other than .wav files",
        ),
        ("cm", 'audio_url = "https://cdn.example/hello.wav"', "CM.com cannot do message.audio_url"),
    ],
)
def test_a_campaign_its_provider_cannot_run_is_refused_at_create(
    env: dict[str, str], tmp_path: Path, provider: str, change: str, message: str
) -> None:
    text = campaign_text("vonage").replace('provider = "vonage"', f'provider = "{provider}"')
    if change:
        text = text.replace('text = "Hello {first_name}, this is a reminder."', change)
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    assert run(env, "campaign", "create", str(path)) == (1, f"Error: {path}: {message}\n")


def test_providers_lists_capabilities_and_limits(env: dict[str, str]) -> None:
    code, output = run(env | {"DIALER_CM__RATE_LIMIT": "25", "DIALER_CM__MAX_CONCURRENT": "40"}, "providers")
    lines = ([cell.strip() for cell in line.strip("│ ").split("│")] for line in output.splitlines())
    rows = {cells[0]: cells for cells in lines if cells[0] in PROVIDERS}
    assert code == 0 and set(rows) == set(PROVIDERS)
    assert rows["routee"][-2:] == ["1", "-"] and rows["vonage"][-2:] == ["3", "-"]  # documented, no cap
    assert rows["cm"][-2:] == ["25", "40"]  # as configured
    assert rows["fractel"][4] == "-" and rows["vonage"][4] == "yes"  # the DTMF column


@pytest.mark.timeout(200)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_quickstart_runs_the_example_to_a_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.chdir(tmp_path)
    # An account allowed 10 calls/s (at Routee's documented 1/s the run takes two minutes): the
    # simulator holds the dialer to the limit the account is configured with.
    code, output = run({f"DIALER_{provider.upper()}__RATE_LIMIT": "10"}, "quickstart", "--provider", provider)
    assert code == 0, output
    assert "imported 60 contacts, 2 row(s) rejected" in output
    results = pd.read_csv(tmp_path / "quickstart" / "results.csv", dtype=str, keep_default_na=False)
    table = expected(provider)
    assert len(results) == 60
    for _, row in results.iterrows():
        outcomes, result, digits = table[row["phone"][-1]]
        assert (row["result"], int(row["attempts"]), row["last_outcome"]) == (
            result,
            len(outcomes),
            outcomes[-1],
        )
        assert row["dtmf_choice"] == {"1": "confirm", "2": "cancel"}.get(digits or "", "")


def _create(env: dict[str, str], tmp_path: Path, text: str) -> tuple[int, str, Path]:
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    code, output = run(env, "campaign", "create", str(path))
    return code, output, path


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_caller_id_the_provider_cannot_send_is_refused_at_create(
    env: dict[str, str], tmp_path: Path, provider: str
) -> None:
    text = campaign_text(provider).replace('caller_id = "+14155550100"', 'caller_id = "hello"')
    code, output, path = _create(env, tmp_path, text)
    assert code == 1 and output.startswith(f"Error: {path}: caller_id:")
    assert "'hello'" in output
    assert run(env, "campaign", "list")[1].strip() == "no campaigns yet: dialer campaign create FILE"


def test_an_unknown_region_is_refused_at_create(env: dict[str, str], tmp_path: Path) -> None:
    text = campaign_text("vonage").replace(
        'caller_id = "+14155550100"', 'caller_id = "+14155550100"\nregion = "XX"'
    )
    code, output, path = _create(env, tmp_path, text)
    assert (code, output.strip()) == (
        1,
        f"Error: {path}: region: unknown region 'XX' (use a two-letter country code such as US or GB)",
    )


def test_more_calls_per_second_than_the_account_allows_are_refused_at_create(
    env: dict[str, str], tmp_path: Path
) -> None:
    text = campaign_text("routee").replace("[pacing]\n", "[pacing]\ncalls_per_second = 2\n")
    code, output, path = _create(env, tmp_path, text)
    assert (code, output.strip()) == (
        1,
        f"Error: {path}: pacing.calls_per_second: 2 is more than the Routee account allows"
        " (1 per second; DIALER_ROUTEE__RATE_LIMIT)",
    )
    get_settings.cache_clear()  # a new process, on an account whose limit was raised
    code, _, _ = _create(env | {"DIALER_ROUTEE__RATE_LIMIT": "5"}, tmp_path, text)
    assert code == 0


def test_a_campaign_file_saved_with_a_byte_order_mark_is_read(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "campaign.toml"
    path.write_bytes(b"\xef\xbb\xbf" + campaign_text("vonage").encode())  # as Notepad saves it
    assert run(env, "campaign", "create", str(path)) == (
        0,
        "created campaign e2e (vonage); next: dialer import CSV --campaign e2e\n",
    )


def _running_campaign(env: dict[str, str], tmp_path: Path) -> Path:
    path = write_campaign(tmp_path)
    assert run(env, "campaign", "create", str(path))[0] == 0
    (tmp_path / "c.csv").write_text("phone,first_name\n+12125550106,Ada\n")
    assert run(env, "import", str(tmp_path / "c.csv"), "--campaign", "e2e")[0] == 0
    assert run(env, "campaign", "start", "e2e", "--wait", "0")[0] == 0
    return path


def test_a_paused_campaign_is_updated_from_its_file(env: dict[str, str], tmp_path: Path) -> None:
    path = _running_campaign(env, tmp_path)
    changed = path.read_text().replace("this is a reminder", "this is your last reminder")
    path.write_text(changed)
    code, output = run(env, "campaign", "update", str(path))
    assert (code, output.strip()) == (1, "Error: campaign 'e2e' is running: pause it before changing it")
    assert run(env, "campaign", "pause", "e2e")[0] == 0
    assert run(env, "campaign", "update", str(path)) == (
        0,
        "updated campaign e2e; `dialer campaign resume e2e` (with the workers running) carries it on\n",
    )
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        spec = spec_of(get_campaign(session, "e2e"))
    assert spec.message.text == "Hello {first_name}, this is your last reminder."
    path.write_text(changed.replace('caller_id = "+14155550100"', 'caller_id = "+14155550199"'))
    code, output = run(env, "campaign", "update", str(path))
    assert code == 1 and "caller_id cannot change once contacts are imported" in output


def test_a_campaign_is_deleted_unless_it_is_running(env: dict[str, str], tmp_path: Path) -> None:
    _running_campaign(env, tmp_path)
    code, output = run(env, "campaign", "delete", "e2e", "--yes")
    assert (code, output.strip()) == (1, "Error: campaign 'e2e' is running: pause or cancel it first")
    assert run(env, "campaign", "cancel", "e2e")[0] == 0
    assert run(env, "campaign", "delete", "e2e", "--yes") == (
        0,
        "deleted campaign e2e and its 1 contact(s)\n",
    )
    assert run(env, "campaign", "list")[1].strip() == "no campaigns yet: dialer campaign create FILE"
    assert run(env, "campaign", "delete", "e2e", "--yes")[0] == 1


def _started_without_workers(env: dict[str, str], tmp_path: Path) -> list[str]:
    get_settings.cache_clear()
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    (tmp_path / "c.csv").write_text("phone,first_name\n+12125550106,Ada\n")
    assert run(env, "import", str(tmp_path / "c.csv"), "--campaign", "e2e")[0] == 0
    code, output = run(env, "campaign", "start", "e2e", "--wait", "1")
    assert code == 0
    return output.splitlines()


@pytest.mark.services
def test_starting_with_no_worker_alive_says_what_to_run(
    env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    assert _started_without_workers(env | {"DIALER_REDIS_URL": redis_url}, tmp_path) == [
        "campaign e2e is running",
        "warning: no worker has taken work in 1 s, so nothing is being called. Start each of these as its"
        " own process:",
        "  celery -A workers worker --pool threads --concurrency 32",
        "  celery -A workers beat",
        "or pause it (`dialer campaign pause e2e`) and run it in one process: `dialer run e2e`",
    ]


def test_starting_with_no_redis_says_to_start_it(env: dict[str, str], tmp_path: Path) -> None:
    from tests.workers.deployment import free_port

    broker = f"redis://127.0.0.1:{free_port()}/0"
    lines = _started_without_workers(env | {"DIALER_REDIS_URL": broker}, tmp_path)
    assert lines[0] == "campaign e2e is running"
    assert lines[1].startswith(f"warning: Redis at {broker} does not answer (")
    assert lines[2:5] == [
        "  redis-server",
        "  celery -A workers worker --pool threads --concurrency 32",
        "  celery -A workers beat",
    ]


@pytest.mark.timeout(200)
def test_quickstart_runs_the_survey_example_with_its_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = run({"DIALER_VONAGE__RATE_LIMIT": "10"}, "quickstart", "--example", "survey")
    assert code == 0, output
    results = pd.read_csv(tmp_path / "quickstart" / "results.csv", dtype=str, keep_default_na=False)
    assert len(results) == 60
    by_digit = results.groupby(results["phone"].str[-1])
    for digit, rows in by_digit:
        if digit == "7":  # presses 9: off the list
            assert set(rows["result"]) == {"opted_out"} and set(rows["opted_out"]) == {"true"}
        elif digit == "6":  # presses 0: put through to the front desk
            assert set(rows["transfer_to"]) == {"+14155550199"} and set(rows["transfer_outcome"]) == {
                "answered"
            }
        elif digit == "2":  # presses 2 for every question: a poor visit, the staff, a comment, no
            assert set(rows["rating"]) == {"poor"} and set(rows["problem"]) == {"staff"}
            assert all(url.startswith("http://127.0.0.1:") for url in rows["comment"])
            assert set(rows["recommend"]) == {"no"}
    assert (tmp_path / "quickstart" / "survey.toml").is_file()


def test_doctor_checks_what_a_single_process_run_needs(tmp_path: Path) -> None:
    """No Redis configured: `dialer run` is the mode; no workers or beat are asked for, an empty
    directory stays empty, and a loopback public URL fails as `dialer run` would refuse it."""

    def doctor(**extra: str | None) -> tuple[int, dict[str, tuple[str, str]]]:
        get_settings.cache_clear()
        environment = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'dialer.db'}", "DIALER_REDIS_URL": None}
        result = CliRunner().invoke(main, ["doctor"], env=environment | extra)
        lines = {line[6:16].strip(): (line[:4].strip(), line[18:]) for line in result.output.splitlines()}
        return result.exit_code, lines

    code, lines = doctor()
    assert code == 1 and list(lines) == ["mode", "database", "public URL", "providers"]
    assert lines["mode"][1].startswith("dialer run, one process")
    assert lines["database"] == (
        "FAIL",
        f"sqlite:///{tmp_path / 'dialer.db'}: no such file yet: run `dialer db upgrade`",
    )
    assert list(tmp_path.iterdir()) == []
    env = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'dialer.db'}"}
    code, output = run(env, "db", "upgrade")
    assert code == 0 and output.startswith(
        f"created the tables in sqlite:///{tmp_path / 'dialer.db'} (migration "
    )
    code, output = run(env, "db", "upgrade")
    assert code == 0 and " was up to date already (" in output
    code, lines = doctor()  # nothing configured yet, nothing to call through
    assert lines["public URL"] == (
        "warn",
        "http://127.0.0.1:8000 is on this machine or a private network: no provider could call it back"
        " (no provider is configured yet, and no campaign names one; fine for --simulate)",
    )
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0  # a Vonage campaign
    loopback = (
        "FAIL",
        "http://127.0.0.1:8000 is on this machine or a private network: vonage cannot call it back"
        " (`dialer run` refuses it; --simulate does not need it)",
    )
    code, lines = doctor()
    assert code == 1 and lines["public URL"] == loopback
    code, lines = doctor(DIALER_REDIS_URL="redis://127.0.0.1:1/0")  # the workers' mode: the same
    assert lines["mode"][1].startswith("Celery workers") and lines["public URL"] == loopback
    code, lines = doctor(DIALER_PUBLIC_URL="https://dialer.example.com")
    assert code == 0 and lines["public URL"] == ("ok", "https://dialer.example.com")
    assert lines["providers"][0] == "warn"
    code, lines = doctor(
        DIALER_PUBLIC_URL="https://dialer.example.com", DIALER_REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert code == 1 and lines["mode"][1].startswith("Celery workers") and lines["redis"][0] == "FAIL"


def test_every_option_says_what_it_takes() -> None:
    """--provider lists the five providers; every option and argument of every command has help."""
    from dialer.cli import _PROVIDER

    assert sorted(_PROVIDER.choices) == sorted(PROVIDERS)
    assert "[vonage|cm|routee|cequens|fractel]" in run({}, "simulate", "--help")[1]

    def commands(group: click.Group, path: str = "dialer") -> Iterator[tuple[str, click.Command]]:
        for name, command in group.commands.items():
            yield f"{path} {name}", command
            if isinstance(command, click.Group):
                yield from commands(command, f"{path} {name}")

    silent = [
        f"{path} {parameter.opts[0]}"
        for path, command in commands(main)
        for parameter in command.params
        if isinstance(parameter, click.Option) and not parameter.help and parameter.opts[0] != "--help"
    ]
    assert silent == []


def test_importing_a_file_again_says_its_rows_are_in_and_keeps_the_first_rejects(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n+12125550106,Ada\n+12125550107,Ben\nnot a number,Cy\n")
    first = tmp_path / "contacts.rejects.csv"
    assert run(env, "import", str(path), "--campaign", "e2e") == (
        0,
        f"imported 2 contact(s) into e2e; 1 row(s) rejected, listed in {first}\n",
    )
    kept = first.read_text()
    second = tmp_path / "contacts.rejects-2.csv"
    assert run(env, "import", str(path), "--campaign", "e2e") == (
        0,
        "imported 0 contact(s) into e2e; 2 already in it (imported before);"
        f" 1 row(s) rejected, listed in {second}\n",
    )
    assert first.read_text() == kept
    assert [line.split(",")[-1] for line in second.read_text().splitlines()[1:]] == [
        "already in the campaign",
        "already in the campaign",
        first.read_text().splitlines()[1].split(",")[-1],
    ]


@pytest.mark.timeout(120)
def test_an_interrupted_quickstart_says_the_command_that_carries_it_on_and_it_does(tmp_path: Path) -> None:
    """The quickstart's database is its own: the hint names it, and the hint, run by a shell as
    printed, finishes the campaign."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DIALER_DATABASE_URL", None)
    quickstart = subprocess.Popen(
        [sys.executable, "-m", "dialer", "quickstart", "--dir", str(tmp_path / "qs")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert quickstart.stdout is not None
    lines = []
    for line in quickstart.stdout:  # until it runs
        lines.append(line)
        if line.startswith("running quickstart-vonage"):
            break
    quickstart.send_signal(signal.SIGINT)
    output = "".join(lines) + quickstart.communicate(timeout=60)[0]
    assert quickstart.returncode == 0, output
    database = f"sqlite:///{(tmp_path / 'qs' / 'quickstart.db').resolve()}"
    hint = f"DIALER_DATABASE_URL={database} dialer run quickstart-vonage --simulate"
    assert f"campaign quickstart-vonage is paused: `{hint}` resumes it" in output
    carried = subprocess.run(
        hint, shell=True, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert carried.returncode == 0, carried.stdout + carried.stderr
    assert carried.stdout.rstrip().endswith("campaign quickstart-vonage is completed")


def test_starting_or_resuming_a_campaign_only_simulated_on_the_workers_asks_first(tmp_path: Path) -> None:
    env = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'dialer.db'}", "DIALER_REDIS_URL": None}
    assert run(env, "db", "upgrade")[0] == 0
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    assert run(env, "import", str(write_contacts(tmp_path, 2)), "--campaign", "e2e")[0] == 0

    def simulated(status: str) -> None:
        with db.session_scope(str(env["DIALER_DATABASE_URL"])) as session:
            campaign = get_campaign(session, "e2e")
            campaign.simulated, campaign.status = True, status

    moves = (("start", "draft", "running"), ("start", "paused", "running"), ("resume", "paused", "running"))
    for action, before, after in moves:
        simulated(before)
        result = CliRunner().invoke(main, ["campaign", action, "e2e", "--wait", "0"], env=env, input="n\n")
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            "campaign e2e has only been simulated so far: place real calls through vonage? [y/N]: n",
            f"Error: campaign 'e2e': not {action}ed (it stays as it was)",
        ]
        with db.session_scope(str(env["DIALER_DATABASE_URL"])) as session:
            assert get_campaign(session, "e2e").status == before
        result = CliRunner().invoke(main, ["campaign", action, "e2e", "--wait", "0", "--yes"], env=env)
        assert result.exit_code == 0, result.output
        with db.session_scope(str(env["DIALER_DATABASE_URL"])) as session:
            campaign = get_campaign(session, "e2e")
            assert (campaign.status, campaign.simulated) == (after, False)
    simulated("running")  # nothing to resume: not asked, told why
    result = CliRunner().invoke(main, ["campaign", "resume", "e2e", "--wait", "0"], env=env, input="y\n")
    assert result.exit_code == 1 and "simulated so far" not in result.output, result.output


def test_doctor_says_why_a_sqlite_path_cannot_be_a_database(tmp_path: Path) -> None:
    loop = tmp_path / "loop.db"
    loop.symlink_to(loop)
    for path, why in (
        (loop, "Too many levels of symbolic links: it leads nowhere (a symlink loop)"),
        (tmp_path / "gone" / "dialer.db", f"the directory {tmp_path / 'gone'} does not exist"),
    ):
        get_settings.cache_clear()
        env = {"DIALER_DATABASE_URL": f"sqlite:///{path}", "DIALER_REDIS_URL": None}
        result = CliRunner().invoke(main, ["doctor"], env=env)
        assert result.exit_code == 1
        assert f"FAIL  database    sqlite database {path}: {why}" in result.output
