"""Import: every bad file gets one clear message naming file, row and column, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from campaigns.spec import parse_campaign
from dialer import db
from dialer.errors import ImportFailed
from dialer.importer import MAX_FIELD, import_contacts
from dialer.models import Campaign, Contact, DncEntry
from dialer.operations import create_campaign
from tests.dialer.factories import NOW
from tests.e2e import campaign_text


@pytest.fixture
def campaign(sqlite_url: str) -> Campaign:
    with db.session_scope(sqlite_url) as session:
        return create_campaign(session, parse_campaign(campaign_text("vonage", 60)))


def _import(url: str, campaign: Campaign, path: Path, **options: object):  # type: ignore[no-untyped-def]
    with db.session_scope(url) as session:
        return import_contacts(session, campaign=campaign, path=path, now=NOW, **options)  # type: ignore[arg-type]


def _contacts(url: str) -> int:
    with db.session_scope(url) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Contact)) or 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "{path}: the file is empty"),
        (b"phone,first_name\n", "{path}: the file has a header but no rows"),
        (
            b"number,first_name\n+12125550106,Ada\n",
            "{path}: row 1: no 'phone' column (columns: number, first_name; give --phone-column)",
        ),
        (
            b"phone,surname\n+12125550106,Lovelace\n",
            "{path}: row 1: the message needs column(s) first_name, which the file lacks",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "{path}: this is a binary file, not a CSV"),
        (
            b"phone,first_name\n+12125550106,Ada\n+12125550107," + b"x" * (MAX_FIELD + 1) + b"\n",
            f"{{path}}: row 3, column 'first_name': field is {MAX_FIELD + 1} characters long"
            f" (at most {MAX_FIELD})",
        ),
    ],
)
def test_a_bad_file_is_refused_with_one_clear_message_and_nothing_written(
    sqlite_url: str, campaign: Campaign, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFailed) as caught:
        _import(sqlite_url, campaign, path)
    assert str(caught.value) == message.format(path=path)
    assert _contacts(sqlite_url) == 0


def test_a_missing_file_is_named(sqlite_url: str, campaign: Campaign, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"nope\.csv: no such file"):
        _import(sqlite_url, campaign, tmp_path / "nope.csv")


def test_bad_rows_are_reported_and_good_rows_kept(
    sqlite_url: str, campaign: Campaign, tmp_path: Path
) -> None:
    with db.session_scope(sqlite_url) as session:
        session.add(DncEntry(phone="+12125550109"))
    path = tmp_path / "contacts.csv"
    path.write_text(
        "phone,first_name,timezone\n"
        "(212) 555-0106,Ada,\n"
        "hello,Ben,\n"
        "+1 212 555 0106,Ada again,\n"
        "+12125550109,Dnc,\n"
        "+12125550107,Zoned,Mars/Base\n"
        "+12125550108,Tokyo,Asia/Tokyo\n"
    )
    report = _import(sqlite_url, campaign, path, region="US")
    assert report.accepted == 2
    assert [(r.row, r.reason) for r in report.rejects] == [
        (3, "invalid phone number: not a phone number"),
        (4, "duplicate of row 2"),
        (5, "on the do-not-call list"),
        (6, "unknown time zone in column 'timezone'"),
    ]
    with db.session_scope(sqlite_url) as session:
        contacts = session.execute(
            sa.select(Contact.phone, Contact.zone, Contact.variables).order_by(Contact.id)
        ).all()
    assert contacts == [
        ("+12125550106", None, {"first_name": "Ada", "timezone": ""}),
        ("+12125550108", "Asia/Tokyo", {"first_name": "Tokyo", "timezone": "Asia/Tokyo"}),
    ]


def test_importing_the_same_file_twice_adds_nothing(
    sqlite_url: str, campaign: Campaign, tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n+12125550106,Ada\n+12125550107,Ben\n")
    assert _import(sqlite_url, campaign, path).accepted == 2
    second = _import(sqlite_url, campaign, path)
    assert second.accepted == 0 and {r.reason for r in second.rejects} == {"already in the campaign"}
    assert _contacts(sqlite_url) == 2


@pytest.mark.parametrize(
    ("encoding", "delimiter"), [("utf-8-sig", ","), ("utf-8", ";"), ("cp1252", "\t"), ("latin-1", "|")]
)
def test_encodings_and_delimiters_are_detected(
    sqlite_url: str, campaign: Campaign, tmp_path: Path, encoding: str, delimiter: str
) -> None:
    path = tmp_path / "contacts.csv"
    text = f"phone{delimiter}first_name\n+12125550106{delimiter}Zoë\n+12125550107{delimiter}Renée\n"
    path.write_bytes(text.encode(encoding))
    assert _import(sqlite_url, campaign, path).accepted == 2
    with db.session_scope(sqlite_url) as session:
        names = session.execute(sa.select(Contact.variables).order_by(Contact.id)).scalars().all()
    assert [n["first_name"] for n in names] == ["Zoë", "Renée"]
