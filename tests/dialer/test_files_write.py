"""Files for the operator are written whole or not at all, as a plain open() would leave them (mode,
symlinks), and every refusal of the system is one line naming the path and why."""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from campaigns.spec import parse_campaign
from dialer import db, files
from dialer.errors import ConfigurationError, ImportFailed, WriteFailed
from dialer.export import write_table
from dialer.files import write_atomically, write_text
from dialer.importer import import_contacts
from dialer.models import Campaign, Contact
from dialer.operations import create_campaign
from tests.dialer.factories import NOW
from tests.e2e import campaign_text

UNWRITABLE = Path("/sys")
"""A directory where no file can be made, even by root (the tests run as root: chmod cannot)."""


def refusal(directory: Path) -> str:
    """The system's reason for refusing a new file in ``directory``."""
    try:
        os.close(os.open(directory / ".probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        return os.strerror(error.errno or 0)
    raise AssertionError(f"{directory} takes new files")


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process's umask for the test; the previous one comes back after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def stray_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


TABLE = pa.table({"phone": ["+14155550100"], "first_name": ["Ada"]})
WRITERS: dict[str, Callable[[Path], object]] = {
    "report.html": lambda path: write_text(path, "<p>report</p>\n"),
    "results.csv": lambda path: write_table(TABLE, path),
    "results.xlsx": lambda path: write_table(TABLE, path),
    "results.parquet": lambda path: write_table(TABLE, path),
}


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_a_new_file_has_the_mode_open_gives_and_a_replaced_one_keeps_its_own(
    tmp_path: Path, umask: Callable[[int], int], name: str, mask: int
) -> None:
    umask(mask)
    path = tmp_path / name
    WRITERS[name](path)
    assert mode(path) == 0o666 & ~mask  # mkstemp's 0600 before: the results hidden from the team
    path.chmod(0o604)
    WRITERS[name](path)
    assert mode(path) == 0o604
    assert stray_files(tmp_path) == []


def test_a_private_file_replaced_stays_private_while_it_is_written(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    umask(0o022)
    path = tmp_path / "results.csv"
    path.write_text("the earlier results\n")
    path.chmod(0o600)
    modes = []

    def write(partial: Path) -> None:
        modes.append(mode(partial))
        partial.write_text("the new results\n")
        modes.append(mode(partial))

    write_atomically(path, write)
    assert (modes, mode(path), path.read_text()) == ([0o600, 0o600], 0o600, "the new results\n")
    path.chmod(0o444)  # read-only: its owner may still write it while it is made, then not
    modes.clear()
    write_atomically(path, write)
    assert (modes, mode(path)) == ([0o644, 0o644], 0o444)


def test_a_directory_where_no_file_can_be_made_is_one_error() -> None:
    for write in (
        lambda: write_text(UNWRITABLE / "x.csv", "x"),
        lambda: write_table(TABLE, UNWRITABLE / "x.csv"),
    ):
        with pytest.raises(WriteFailed) as caught:  # mkstemp's PermissionError escaped before
            write()
        assert str(caught.value) == f"/sys/x.csv: cannot be written: {refusal(UNWRITABLE)}"


def test_a_temporary_file_that_cannot_be_made_leaves_the_file_there_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    path.write_text("the previous results\n")
    real_open = os.open

    def read_only(name: str | os.PathLike[str], flags: int, *args: int, **kwargs: object) -> int:
        if str(name).endswith(".part"):  # the temporary file: as on a file system mounted read-only
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(name))
        return real_open(name, flags, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", read_only)
        with pytest.raises(WriteFailed) as caught:
            write_text(path, "new results\n")
    assert str(caught.value) == f"{path}: cannot be written: Read-only file system"
    assert path.read_text() == "the previous results\n"
    assert stray_files(tmp_path) == []


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    real = tmp_path / "shared" / "results.csv"
    real.write_text("old\n")
    real.chmod(0o640)
    (tmp_path / "hop.csv").symlink_to("shared/results.csv")  # relative, as `ln -s` makes them
    link = tmp_path / "latest.csv"
    link.symlink_to("hop.csv")  # a link to a link
    written = write_text(link, "new\n")
    assert os.readlink(link) == "hop.csv"  # a regular file of its own before, the target unchanged
    assert os.readlink(tmp_path / "hop.csv") == "shared/results.csv"
    assert (real.read_text(), mode(real)) == ("new\n", 0o640)
    assert written == files.Written(link, replaced=True)
    # A link to a file not there yet, in a directory that is: the file is made where it leads.
    (tmp_path / "next.csv").symlink_to("shared/next.csv")
    write_table(TABLE, tmp_path / "next.csv")
    assert (tmp_path / "next.csv").is_symlink()
    assert (tmp_path / "shared" / "next.csv").read_text().startswith('"phone"')
    assert stray_files(tmp_path) == stray_files(tmp_path / "shared") == []


LOOP = "Too many levels of symbolic links: it leads nowhere (a symlink loop)"


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"out.csv": "out.csv"}, "{out}: cannot be written: " + LOOP),
        ({"out.csv": "a.csv", "a.csv": "out.csv"}, "{out}: cannot be written: " + LOOP),
        # realpath, not strict past a missing part, stops at the loop and returns the link
        ({"out.csv": "gone/../a.csv", "a.csv": "a.csv"}, "{out}: cannot be written: " + LOOP),
        (
            {"out.csv": "/nonexistent/results.csv"},
            "{out} (a link to /nonexistent/results.csv): no such directory '/nonexistent'",
        ),
        ({"out.csv": "/sys/results.csv"}, "{out} (a link to /sys/results.csv): cannot be written: {refused}"),
    ],
)
def test_a_link_that_leads_nowhere_writable_is_one_error_and_stays(
    tmp_path: Path, links: dict[str, str], message: str
) -> None:
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    out = tmp_path / "out.csv"
    for write in (lambda: write_text(out, "x"), lambda: write_table(TABLE, out)):
        with pytest.raises(WriteFailed) as caught:
            write()
        assert str(caught.value) == message.format(out=out, refused=refusal(UNWRITABLE))
        assert {name: os.readlink(tmp_path / name) for name in links} == links  # not made a file
        assert stray_files(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "then"),
    [
        ("contacts.rejects.csv", ["contacts.rejects-2.csv", "contacts.rejects-3.csv"]),
        ("list.2026.v2.rejects.csv", ["list.2026.v2.rejects-2.csv", "list.2026.v2.rejects-3.csv"]),
        ("rejects", ["rejects-2", "rejects-3"]),
    ],
)
def test_a_file_not_to_replace_goes_beside_under_the_first_unused_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, then: list[str]
) -> None:
    assert list(itertools.islice(files.unused_names(Path(name)), 3)) == [Path(name), *map(Path, then)]
    monkeypatch.chdir(tmp_path)  # the name chosen is given as the path was: relative here
    written = [write_text(Path(name), f"list {number}\n", replace=False) for number in range(3)]
    assert written == [files.Written(Path(found), replaced=False) for found in [name, *then]]
    assert [(tmp_path / found).read_text() for found in [name, *then]] == ["list 0\n", "list 1\n", "list 2\n"]


def test_a_file_made_at_the_name_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "contacts.rejects.csv"

    def write(partial: Path) -> None:  # another import writes its list while this one writes
        path.write_text("the other import's rejects\n")
        partial.write_text("this import's rejects\n")

    assert write_atomically(path, write, replace=False).path == tmp_path / "contacts.rejects-2.csv"
    assert path.read_text() == "the other import's rejects\n"
    assert (tmp_path / "contacts.rejects-2.csv").read_text() == "this import's rejects\n"
    assert stray_files(tmp_path) == []


def test_without_hard_links_a_file_not_to_replace_still_goes_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: object) -> None:  # FAT, exFAT: link() is not supported
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", refused)
    path = tmp_path / "contacts.rejects.csv"
    path.write_text("first\n")
    assert write_text(path, "second\n", replace=False).path == tmp_path / "contacts.rejects-2.csv"
    assert path.read_text() == "first\n"
    assert (tmp_path / "contacts.rejects-2.csv").read_text() == "second\n"
    assert stray_files(tmp_path) == []


# -- the import's rejects ---------------------------------------------------------------------


@pytest.fixture
def campaign(url: str) -> Campaign:
    with db.session_scope(url) as session:
        return create_campaign(session, parse_campaign(campaign_text("vonage", 60)))


def _contacts(url: str) -> int:
    with db.session_scope(url) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Contact)) or 0


def test_an_import_whose_rejects_cannot_be_written_keeps_nothing(
    url: str, campaign: Campaign, tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n+12125550106,Ada\nnot a number,Ben\n")
    with pytest.raises(ImportFailed) as caught, db.session_scope(url) as session:
        import_contacts(session, campaign=campaign, path=path, now=NOW, rejects=UNWRITABLE / "x.csv")
    assert str(caught.value) == (
        f"/sys/x.csv: cannot be written: {refusal(UNWRITABLE)}; nothing was imported (its rejected rows"
        " would go unlisted): give --rejects a file that can be written"
    )
    assert _contacts(url) == 0
    with db.session_scope(url) as session:
        report = import_contacts(session, campaign=campaign, path=path, now=NOW, rejects=tmp_path / "r.csv")
    assert (report.accepted, report.rejects_file, _contacts(url)) == (1, tmp_path / "r.csv", 1)


def test_rejects_named_as_the_file_being_imported_are_refused(
    url: str, campaign: Campaign, tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    text = "phone,first_name\n+12125550106,Ada\nnot a number,Ben\n"
    path.write_text(text)
    (tmp_path / "same.csv").symlink_to(path)
    with pytest.raises(ImportFailed) as caught, db.session_scope(url) as session:
        import_contacts(session, campaign=campaign, path=path, now=NOW, rejects=tmp_path / "same.csv")
    assert str(caught.value) == f"{path}: --rejects names the file being imported: give another name"
    assert (path.read_text(), _contacts(url)) == (text, 0)


# -- the SQLite database's path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("missing/dialer.db", "sqlite database {file}: the directory {tmp}/missing does not exist"),
        ("loop.db", "sqlite database {file}: " + LOOP),
        ("looping/dialer.db", "sqlite database {file}: " + LOOP),
        ("dangling.db", "sqlite database {file}: the directory /nonexistent does not exist"),
    ],
)
def test_a_sqlite_path_that_cannot_be_opened_says_why(tmp_path: Path, file: str, message: str) -> None:
    (tmp_path / "loop.db").symlink_to("loop.db")
    (tmp_path / "looping").symlink_to("looping")
    (tmp_path / "dangling.db").symlink_to("/nonexistent/dialer.db")
    with pytest.raises(ConfigurationError) as caught:  # SQLite: "unable to open database file"
        db.get_engine(f"sqlite:///{tmp_path / file}")
    assert str(caught.value) == message.format(file=tmp_path / file, tmp=tmp_path)


def test_a_new_sqlite_file_in_a_directory_that_exists_is_made_by_sqlite_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    engine = db.get_engine(url)  # the check makes no file
    assert not (tmp_path / "new.db").exists()
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT 1")) == 1
    assert (tmp_path / "new.db").exists()
    engine.dispose()
    assert db.get_engine("sqlite://") is not None  # in memory: no path to check
