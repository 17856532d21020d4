"""`dialer import` against files as operators really have them: one bad row is that row's problem."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dialer import db, importer
from dialer.cli import main
from dialer.entry import READ_ASIDE
from dialer.importer import MAX_FIELD, MAX_HEADER
from dialer.models import Contact
from tests.e2e import write_campaign


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    environment = {"DIALER_DATABASE_URL": sqlite_url}
    assert run(environment, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    return environment


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def imported(env: dict[str, str]) -> list[tuple[str, dict[str, str], str | None]]:
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        found = session.execute(
            sa.select(Contact.phone, Contact.variables, Contact.zone).order_by(Contact.id)
        )
        return [tuple(row) for row in found]  # type: ignore[misc]


def rejects_of(path: Path) -> list[list[str]]:
    with (path.with_name(path.stem + ".rejects.csv")).open(newline="") as file:
        return list(csv.reader(file))


def test_a_one_line_file_of_50_mb_is_refused_at_its_header(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "one-line.csv"
    path.write_bytes(b"phone," + b"a," * (25 * 1024 * 1024))
    code, output = run(env, "import", str(path), "--campaign", "e2e")
    assert (code, output) == (
        1,
        f"Error: {path}: row 1: the header is longer than {MAX_HEADER // 1024} KB: not a contact file"
        " (or its lines do not end with a newline)\n",
    )
    assert imported(env) == []


def test_a_huge_cell_and_an_extra_comma_reject_their_rows_only(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "phone,first_name\n"
        "+12125550106,Ada\n"
        f"+12125550107,{'x' * 100_000}\n"
        "+12125550108,Lovelace, Ada\n"
        "+12125550109,Ben\n"
    )
    code, output = run(env, "import", str(path), "--campaign", "e2e")
    rejects = path.with_name("contacts.rejects.csv")
    assert (code, output) == (0, f"imported 2 contact(s) into e2e; 2 row(s) rejected, listed in {rejects}\n")
    assert rejects_of(path) == [
        ["row (as a spreadsheet numbers it: the header is row 1)", "value", "reason"],
        ["3", "+12125550107", f"column 'first_name' is 100,000 characters long (at most {MAX_FIELD:,})"],
        [
            "4",
            "+12125550108,Lovelace, Ada",
            "3 fields where the header has 2 (a delimiter outside quotes?)",
        ],
    ]
    assert [phone for phone, _, _ in imported(env)] == ["+12125550106", "+12125550109"]


def test_headers_match_whatever_their_case_and_spaces_and_map_renames_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(" PHONE , First Name ,TimeZone\n+12125550106,Ada, Europe/Paris \n")
    assert run(env, "import", str(path), "--campaign", "e2e") == (
        0,
        "imported 1 contact(s) into e2e\n",
    )
    assert imported(env) == [
        ("+12125550106", {"first_name": "Ada", "timezone": "Europe/Paris"}, "Europe/Paris")
    ]

    other = tmp_path / "other.csv"
    other.write_text("Mobile,Given\n+12125550107,Ben\n")
    assert run(env, "import", str(other), "--campaign", "e2e") == (
        1,
        f"Error: {other}: row 1: no 'phone' column (columns: Mobile, Given; give --phone-column)\n",
    )
    assert run(
        env, "import", str(other), "--campaign", "e2e", "--map", "Mobile=phone", "--map", "Given=first_name"
    ) == (0, "imported 1 contact(s) into e2e\n")
    assert imported(env)[1][:2] == ("+12125550107", {"first_name": "Ben"})
    assert run(env, "import", str(other), "--campaign", "e2e", "--map", "Cell=phone") == (
        1,
        f"Error: {other}: row 1: --map names 'Cell', which is not a column (Mobile, Given)\n",
    )


def test_rows_are_numbered_as_a_spreadsheet_shows_them_blank_lines_included(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n+12125550106,Ada\n\n,\n+12125550106,Ada twice\nhello,Ben\n")
    assert run(env, "import", str(path), "--campaign", "e2e")[0] == 0
    assert rejects_of(path)[1:] == [
        ["5", "+12125550106", "duplicate of row 2"],
        ["6", "hello", "invalid phone number: not a phone number"],
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf_16_is_read_with_its_bom_or_when_named(
    env: dict[str, str], tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes("phone,first_name\n+12125550106,Zoë\n".encode(encoding))
    args = ["--encoding", encoding] if encoding == "utf-16-le" else []
    assert run(env, "import", str(path), "--campaign", "e2e", *args) == (
        0,
        "imported 1 contact(s) into e2e\n",
    )
    assert imported(env)[0][1] == {"first_name": "Zoë"}


def test_a_byte_that_is_not_utf_8_far_into_the_file_is_located_by_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    lines = [f"+1212555{n % 10_000:04d},Person {n}\n".encode() for n in range(5000)]
    lines[4000] = "+12125550001,Renée\n".encode("cp1252")
    path.write_bytes(b"phone,first_name\n" + b"".join(lines))
    assert path.stat().st_size > 65536
    code, output = run(env, "import", str(path), "--campaign", "e2e")
    assert code == 1
    assert output.startswith(f"Error: {path}: line 4002: not utf-8-sig text (invalid continuation byte)")
    assert imported(env) == []
    assert run(env, "import", str(path), "--campaign", "e2e", "--encoding", "cp1252")[0] == 0


def test_a_dry_run_reports_and_writes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name,timezone\n+12125550106,Ada,Asia/Tokyo\nhello,Ben,\n")
    rejects = path.with_name("contacts.rejects.csv")
    assert run(env, "import", str(path), "--campaign", "e2e", "--dry-run") == (
        0,
        f"would import 1 contact(s) into e2e; 1 row(s) rejected, listed in {rejects};"
        " nothing imported (--dry-run)\n",
    )
    assert imported(env) == []
    assert run(env, "import", str(path), "--campaign", "e2e")[1].startswith("imported 1 contact(s)")


def test_colleagues_behind_one_number_are_kept_by_extension_where_the_provider_can_dial_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "office.csv"
    path.write_text(
        "phone,first_name\n"
        "(650) 253-0000 x123,Ada\n"
        "(650) 253-0000 ext. 456,Ben\n"
        "650-253-0000 x123,Ada again\n"
        "(650) 253-0000,Switchboard\n"
    )
    rejects = path.with_name("office.rejects.csv")
    assert run(env, "import", str(path), "--campaign", "e2e", "--region", "US") == (
        0,
        f"imported 3 contact(s) into e2e; 1 row(s) rejected, listed in {rejects}\n",
    )
    assert rejects_of(path)[1:] == [["4", "650-253-0000 x123", "duplicate of row 2"]]
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        lines = session.execute(sa.select(Contact.phone, Contact.extension).order_by(Contact.id)).all()
    assert [tuple(line) for line in lines] == [
        ("+16502530000", "123"),
        ("+16502530000", "456"),
        ("+16502530000", ""),
    ]
    out = tmp_path / "results.csv"
    assert run(env, "export", "e2e", "--out", str(out))[0] == 0
    with out.open(newline="") as file:
        exported = list(csv.DictReader(file))
    assert [(row["phone"], row["extension"]) for row in exported] == [
        ("+16502530000", "123"),
        ("+16502530000", "456"),
        ("+16502530000", ""),
    ]
    # A provider that cannot send digits after the answer is refused while extensions wait.
    code, output = run(env, "campaign", "provider", "e2e", "cm")
    assert (code, output) == (
        1,
        "Error: campaign 'e2e': 2 contact(s) still to call have an extension, which CM.com cannot dial\n",
    )


@pytest.mark.parametrize(
    ("routes", "who"),
    [('provider = "cm"', "CM.com"), ('provider = "vonage"\nfallback = ["cm"]', "CM.com (the route cm)")],
)
def test_an_extension_is_a_rejected_row_where_a_route_cannot_dial_one(
    tmp_path: Path, routes: str, who: str
) -> None:
    """Where the campaign's provider, or a route it may move to, cannot dial the extension."""
    env = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'cm.db'}"}
    assert run(env, "db", "upgrade")[0] == 0
    campaign = write_campaign(tmp_path, provider="cm")
    campaign.write_text(campaign.read_text().replace('provider = "cm"', routes))
    assert run(env, "campaign", "create", str(campaign))[0] == 0
    path = tmp_path / "office.csv"
    path.write_text("phone,first_name\n(650) 253-0000 x123,Ada\n(650) 253-0001,Ben\n")
    assert run(env, "import", str(path), "--campaign", "e2e", "--region", "US")[1].startswith(
        "imported 1 contact(s) into e2e; 1 row(s) rejected"
    )
    assert rejects_of(path)[1:] == [
        ["2", "(650) 253-0000 x123", f"extension 123: {who} cannot dial one (Vonage can)"]
    ]


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: path.mkdir(), "is a directory, not a file"),
        (
            lambda path: os.mkfifo(path),
            "is a named pipe (FIFO), not a file: it is read more than once, so give a file",
        ),
        (None, "no such file"),
    ],
)
def test_importing_what_is_not_a_file_says_what_it_is(
    env: dict[str, str], tmp_path: Path, make: Callable[[Path], None] | None, said: str
) -> None:
    path = tmp_path / "contacts.csv"
    if make is not None:
        make(path)
    code, output = run(env, "import", str(path), "--campaign", "e2e")
    assert (code, output) == (1, f"Error: {path}: {said}\n")
    assert run(env, "import", "/dev/null", "--campaign", "e2e") == (
        1,
        "Error: /dev/null: is a device, not a file\n",
    )


def _big_file(directory: Path, rows: int = 130_000) -> Path:
    """A file past READ_ASIDE (read by a process of its own): distinct US numbers, a name each."""
    path = directory / "big.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["phone", "first_name", "note"])
        for n in range(rows):
            writer.writerow(
                [f"+1{212 + n // 8_000_000 * 100}{2_000_000 + n % 8_000_000:07d}", f"Name {n}", "x" * 40]
            )
    assert path.stat().st_size > importer.READ_ASIDE
    return path


@pytest.mark.timeout(240)
@pytest.mark.parametrize("database", ["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.services)])
def test_two_imports_of_one_file_at_once_store_each_number_once_and_the_loser_says_why(
    request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    url = str(request.getfixturevalue(database))
    env = {**os.environ, "DIALER_DATABASE_URL": url}
    assert run({"DIALER_DATABASE_URL": url}, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    path = _big_file(tmp_path)
    command = [sys.executable, "-m", "dialer", "import", str(path), "--campaign", "e2e"]
    both = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [(process.communicate(timeout=200)[0], process.returncode) for process in both]
    lost = (
        f"Error: {path}: another import into campaign 'e2e' stored some of these numbers while this one"
        " ran; nothing of this one was kept: run it again (it skips those)\n"
    )
    said = sorted((code, output.splitlines()[-1] if code == 0 else output) for output, code in outputs)
    assert said[0] == (0, "imported 130000 contact(s) into e2e")
    assert said[1] in (
        (0, f"imported 0 contact(s) into e2e; 130000 row(s) rejected, listed in {tmp_path}/big.rejects.csv"),
        (1, lost),
    )
    with db.session_scope(url) as session:
        counts = session.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(Contact.phone)))).one()
    assert tuple(counts) == (130_000, 130_000)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_an_import_stopped_midway_keeps_nothing_and_leaves_no_process(
    sqlite_url: str, tmp_path: Path, stop: signal.Signals
) -> None:
    env = {**os.environ, "DIALER_DATABASE_URL": sqlite_url}
    assert (
        run({"DIALER_DATABASE_URL": sqlite_url}, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    )
    path = _big_file(tmp_path, rows=400_000)
    command = [sys.executable, "-m", "dialer", "import", str(path), "--campaign", "e2e"]
    importing = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    helpers = _descendants(importing.pid)
    deadline = time.monotonic() + 30
    while len(helpers) < 3:  # the resource tracker, the fork server, and the process reading the file
        assert time.monotonic() < deadline and importing.poll() is None
        time.sleep(0.05)
        helpers = _descendants(importing.pid)
    importing.send_signal(stop)
    output = importing.communicate(timeout=60)[0]
    assert importing.returncode != 0 and "Traceback" not in output, output
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in helpers):  # they leave with it
        assert time.monotonic() < deadline, helpers
        time.sleep(0.05)
    with db.session_scope(sqlite_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found |= {child, *_descendants(child)}
    return found


def test_the_command_starts_the_reading_processs_server_first_for_a_big_file_only(tmp_path: Path) -> None:
    """``dialer import BIG`` starts the fork server before the CLI's imports, so both import at
    once; a small file, or another command, starts nothing."""
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    big.write_bytes(b"phone\n" + b"+12125550100\n" * (READ_ASIDE // 13 + 1))
    small.write_text("phone\n+12125550100\n")
    script = (
        "import sys, multiprocessing.forkserver as server\n"
        "from dialer.entry import prepare\n"
        "started = prepare(sys.argv[1:])\n"
        "print(started, 'dialer.cli' in sys.modules, server._forkserver._forkserver_pid is not None)\n"
    )
    answers = {}
    for arguments in (
        ["import", str(big), "--campaign", "e2e"],
        ["-v", "import", "--campaign", "e2e", str(big)],
        ["import", str(small), "--campaign", "e2e"],
        ["export", "e2e", "--out", str(big)],
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, *arguments], capture_output=True, text=True, check=True
        )
        answers[" ".join(arguments)] = done.stdout.split()
    assert list(answers.values()) == [
        ["True", "False", "True"],
        ["True", "False", "True"],
        ["False", "False", "False"],
        ["False", "False", "False"],
    ]


def test_ctrl_c_as_an_import_of_a_big_file_starts_prints_no_traceback(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Ctrl-C reaches the whole process group: the command and the fork server it started first,
    both still importing their modules."""
    path = _big_file(tmp_path)
    command = [sys.executable, "-m", "dialer", "import", str(path), "--campaign", "e2e"]
    importing = subprocess.Popen(
        command,
        env={**os.environ, "DIALER_DATABASE_URL": sqlite_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    time.sleep(0.3)
    os.killpg(importing.pid, signal.SIGINT)
    output = importing.communicate(timeout=60)[0]
    assert importing.returncode != 0 and "Traceback" not in output, output
