"""`dialer export` and `dialer import` write the operator's files whole or not at all, and say in
one line (exit code 1, no traceback) why they could not; a bad SQLite path is one line too."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlmodel import col

from dialer import db
from dialer.cli import main
from dialer.models import Contact
from tests.dialer.test_files_write import UNWRITABLE, refusal
from tests.e2e import write_campaign

CONTACTS = "phone,first_name\n+12125550106,Ada\nnot a number,Ben\n"


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    environment = {"DIALER_DATABASE_URL": sqlite_url}
    assert run(environment, "campaign", "create", str(write_campaign(tmp_path))) == (
        0,
        "created campaign e2e (vonage); next: dialer import CSV --campaign e2e\n",
    )
    return environment


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def dialer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as the operator runs it: its stderr is all they see."""
    command = [sys.executable, "-m", "dialer", *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False)


def contacts(env: dict[str, str]) -> list[str]:
    with db.session_scope(env["DIALER_DATABASE_URL"]) as session:
        return list(session.scalars(sa.select(col(Contact.phone)).order_by(col(Contact.id))))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_directory_that_takes_no_file_is_one_line_for_export_and_import(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(CONTACTS)
    reason = refusal(UNWRITABLE)
    # The import's rejects are written before it commits: it keeps nothing rather than lose them.
    failed = dialer(env, "import", str(path), "--campaign", "e2e", "--rejects", "/sys/x.csv")
    assert (failed.returncode, failed.stderr) == (
        1,
        f"Error: /sys/x.csv: cannot be written: {reason}; nothing was imported (its rejected rows"
        " would go unlisted): give --rejects a file that can be written\n",
    )
    assert contacts(env) == []
    too_long = tmp_path / ("r" * 300 + ".csv")  # a name no file system takes: looked at, it raises
    failed = dialer(env, "import", str(path), "--campaign", "e2e", "--rejects", str(too_long))
    assert (failed.returncode, failed.stderr) == (
        1,
        f"Error: {too_long}: cannot be written: File name too long; nothing was imported (its rejected"
        " rows would go unlisted): give --rejects a file that can be written\n",
    )
    assert contacts(env) == []
    assert run(env, "import", str(path), "--campaign", "e2e")[0] == 0
    failed = dialer(env, "export", "e2e", "--out", "/sys/x.csv")
    assert (failed.returncode, failed.stdout, failed.stderr) == (
        1,
        "",
        f"Error: /sys/x.csv: cannot be written: {reason}\n",
    )


def test_rejects_named_by_the_operator_are_replaced_saying_so_and_ours_go_beside(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "list.2026.v2.csv"  # several dots: the number goes before .csv only
    path.write_text(CONTACTS)
    ours = [tmp_path / name for name in ("list.2026.v2.rejects.csv", "list.2026.v2.rejects-2.csv")]
    assert run(env, "import", str(path), "--campaign", "e2e") == (
        0,
        f"imported 1 contact(s) into e2e; 1 row(s) rejected, listed in {ours[0]}\n",
    )
    assert run(env, "import", str(path), "--campaign", "e2e") == (
        0,
        f"imported 0 contact(s) into e2e; 1 already in it (imported before); 1 row(s) rejected,"
        f" listed in {ours[1]}\n",
    )
    assert len(ours[0].read_text().splitlines()) == 2  # the first list, as it was
    named = tmp_path / "mine.csv"
    assert run(env, "import", str(path), "--campaign", "e2e", "--rejects", str(named)) == (
        0,
        f"imported 0 contact(s) into e2e; 1 already in it (imported before); 1 row(s) rejected,"
        f" listed in {named}\n",
    )
    named.write_text("the operator's own notes\n")
    assert run(env, "import", str(path), "--campaign", "e2e", "--rejects", str(named)) == (
        0,
        f"imported 0 contact(s) into e2e; 1 already in it (imported before); 1 row(s) rejected,"
        f" listed in {named} (it replaced the file there)\n",
    )
    assert named.read_text().startswith("row (as a spreadsheet numbers it")  # the notes are gone, as asked
    assert sorted(found.name for found in tmp_path.glob("list*")) == sorted(
        [path.name, *(found.name for found in ours)]
    )


@pytest.mark.usefixtures("umask_027")
def test_files_come_out_with_the_mode_open_gives_and_keep_the_one_they_had(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(CONTACTS)
    assert run(env, "import", str(path), "--campaign", "e2e")[0] == 0
    assert mode(tmp_path / "contacts.rejects.csv") == 0o640  # 0600 before, whatever the umask
    out = tmp_path / "results.csv"
    assert run(env, "export", "e2e", "--out", str(out)) == (0, f"wrote 1 row(s) to {out}\n")
    assert mode(out) == 0o640
    out.chmod(0o644)  # shared with the team on purpose
    assert run(env, "export", "e2e", "--out", str(out))[0] == 0
    assert mode(out) == 0o644


def test_an_export_over_a_symlink_writes_where_it_leads_and_a_loop_is_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "shared").mkdir()
    real = tmp_path / "shared" / "results.csv"
    real.write_text("last week's results\n")
    link = tmp_path / "results.csv"
    link.symlink_to("shared/results.csv")
    assert run(env, "export", "e2e", "--out", str(link)) == (0, f"wrote 0 row(s) to {link}\n")
    assert os.readlink(link) == "shared/results.csv"  # a regular file of its own before
    assert real.read_text().startswith('"phone"')
    loop = tmp_path / "loop.csv"
    loop.symlink_to("loop.csv")
    assert run(env, "export", "e2e", "--out", str(loop)) == (
        1,
        f"Error: {loop}: cannot be written: Too many levels of symbolic links: it leads nowhere"
        " (a symlink loop)\n",
    )
    nowhere = tmp_path / "nowhere.csv"
    nowhere.symlink_to("/nonexistent/results.csv")
    assert run(env, "export", "e2e", "--out", str(nowhere)) == (
        1,
        f"Error: {nowhere} (a link to /nonexistent/results.csv): no such directory '/nonexistent'\n",
    )
    assert (loop.is_symlink(), nowhere.is_symlink()) == (True, True)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("missing/dialer.db", "the directory {tmp}/missing does not exist"),
        ("loop.db", "Too many levels of symbolic links: it leads nowhere (a symlink loop)"),
    ],
)
def test_a_sqlite_database_that_cannot_be_opened_is_one_clear_line(
    tmp_path: Path, name: str, why: str
) -> None:
    (tmp_path / "loop.db").symlink_to("loop.db")
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    env = {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / name}"}
    line = f"Error: sqlite database {tmp_path / name}: {why.format(tmp=tmp_path)}\n"
    # SQLite's own words were "unable to open database file", for either
    assert run(env, "status", "e2e") == (1, line)
    assert run(env, "import", str(tmp_path / "contacts.csv"), "--campaign", "e2e") == (1, line)
