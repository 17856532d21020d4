"""Import: every bad file gets one clear message naming file, row and column, and writes nothing."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from campaigns.spec import parse_campaign
from dialer import db, importer
from dialer.errors import ImportFailed
from dialer.importer import MAX_FIELD, import_contacts
from dialer.models import Campaign, Contact, DncEntry
from dialer.operations import create_campaign
from tests.dialer.factories import NOW
from tests.e2e import campaign_text


@pytest.fixture
def campaign(url: str) -> Campaign:
    with db.session_scope(url) as session:
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
        (
            b"phone,first_name\n+12125550106,Ada,Lovelace\n+12125550107,Ben\n",
            "{path}: row 2: more fields than the header's 2, so every row would be read shifted: fix that"
            " row (a delimiter outside quotes?) or the header",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "{path}: this is a binary file, not a CSV (give --encoding if it is UTF-16)",
        ),
    ],
)
def test_a_bad_file_is_refused_with_one_clear_message_and_nothing_written(
    url: str, campaign: Campaign, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFailed) as caught:
        _import(url, campaign, path)
    assert str(caught.value) == message.format(path=path)
    assert _contacts(url) == 0


def test_a_missing_file_is_named(url: str, campaign: Campaign, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"nope\.csv: no such file"):
        _import(url, campaign, tmp_path / "nope.csv")


def test_bad_rows_are_reported_and_good_rows_kept(url: str, campaign: Campaign, tmp_path: Path) -> None:
    with db.session_scope(url) as session:
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
    report = _import(url, campaign, path, region="US")
    assert report.accepted == 2
    assert [(r.row, r.reason) for r in report.rejects] == [
        (3, "invalid phone number: not a phone number"),
        (4, "duplicate of row 2"),
        (5, "on the do-not-call list"),
        (6, "unknown time zone in column 'timezone'"),
    ]
    with db.session_scope(url) as session:
        contacts = session.execute(
            sa.select(Contact.phone, Contact.zone, Contact.variables).order_by(Contact.id)
        ).all()
    assert contacts == [
        ("+12125550106", None, {"first_name": "Ada", "timezone": ""}),
        ("+12125550108", "Asia/Tokyo", {"first_name": "Tokyo", "timezone": "Asia/Tokyo"}),
    ]
    with db.session_scope(url) as session:
        due = session.execute(
            sa.select(Contact.row_number, Contact.state, Contact.attempts, Contact.next_attempt_at)
            .where(Contact.next_attempt_at <= NOW)
            .order_by(Contact.id)
        ).all()
    assert due == [(2, "pending", 0, NOW), (7, "pending", 0, NOW)]
    with db.session_scope(url) as session:  # stored exactly as the ORM stores the same instant
        session.add(
            Contact(campaign_id=campaign.id, phone="+12125550199", row_number=99, next_attempt_at=NOW)
        )
        session.flush()
        stored = session.execute(sa.text("SELECT DISTINCT next_attempt_at FROM contact")).all()
    assert len(stored) == 1


def test_a_field_too_long_rejects_its_row_and_keeps_the_rest(
    url: str, campaign: Campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)
    path = tmp_path / "contacts.csv"
    rows = [f"+1212555{n:04d},Person {n}" for n in range(100, 106)]
    rows[4] = "+12125550199," + "x" * 100_000
    path.write_text("phone,first_name\n" + "\n".join(rows) + "\n")
    report = _import(url, campaign, path)
    assert report.accepted == 5
    assert [(r.row, r.value, r.reason) for r in report.rejects] == [
        (6, "+12125550199", f"column 'first_name' is 100,000 characters long (at most {MAX_FIELD:,})")
    ]
    assert _contacts(url) == 5


def test_progress_is_told_bytes_read_up_to_the_whole_file(
    url: str, campaign: Campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 10)
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n" + "".join(f"+1212555{n:04d},P{n}\n" for n in range(100, 135)))
    seen: list[tuple[int, int]] = []
    report = _import(url, campaign, path, progress=lambda done, total: seen.append((done, total)))
    assert report.accepted == 35
    assert len(seen) == 4
    assert {total for _, total in seen} == {path.stat().st_size}
    assert seen[-1][0] == path.stat().st_size
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_importing_the_same_file_twice_adds_nothing(url: str, campaign: Campaign, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n+12125550106,Ada\n+12125550107,Ben\n")
    assert _import(url, campaign, path).accepted == 2
    second = _import(url, campaign, path)
    assert second.accepted == 0 and {r.reason for r in second.rejects} == {"already in the campaign"}
    assert _contacts(url) == 2


@pytest.mark.parametrize(
    ("encoding", "delimiter"), [("utf-8-sig", ","), ("utf-8", ";"), ("cp1252", "\t"), ("latin-1", "|")]
)
def test_encodings_and_delimiters_are_detected(
    url: str, campaign: Campaign, tmp_path: Path, encoding: str, delimiter: str
) -> None:
    path = tmp_path / "contacts.csv"
    text = f"phone{delimiter}first_name\n+12125550106{delimiter}Zoë\n+12125550107{delimiter}Renée\n"
    path.write_bytes(text.encode(encoding))
    assert _import(url, campaign, path).accepted == 2
    with db.session_scope(url) as session:
        names = session.execute(sa.select(Contact.variables).order_by(Contact.id)).scalars().all()
    assert [n["first_name"] for n in names] == ["Zoë", "Renée"]


BILINGUAL = """
name = "bilingual"
provider = "vonage"
caller_id = "+14155550100"
region = "US"

[flow]
language_column = "language"

[flow.steps.hello]
say = "{greeting}, {first_name}. Press 0 to speak to us."
on = { "0" = "desk" }

[flow.steps.desk]
action = "transfer"
to_column = "desk"
"""


def test_each_contacts_language_and_transfer_number_are_checked_and_kept_normalised(
    url: str, tmp_path: Path
) -> None:
    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(BILINGUAL))
    path = tmp_path / "contacts.csv"
    path.write_text(
        "phone,first_name,greeting,language,desk\n"
        "+12125550101,Ada,Hello,en-US,(415) 555-0199\n"
        "+12125550102,Ana,Hola,es-US,415 555 0198\n"
        "+12125550103,Eve,Hi,xx-XX,415 555 0197\n"  # no such language at Vonage
        "+12125550104,Bo,Hej,,4155550\n"  # no language: the flow's; the desk is no number
    )
    report = _import(url, campaign, path)
    assert report.accepted == 2
    assert [(reject.row, reject.value, reject.reason) for reject in report.rejects] == [
        (4, "xx-XX", "column 'language': Vonage does not speak it"),
        (5, "4155550", "column 'desk': not a number to transfer to: not a valid number for its country"),
    ]
    with db.session_scope(url) as session:
        kept = session.exec(sa.select(Contact.variables).order_by(Contact.id)).scalars().all()  # type: ignore[call-overload]
    assert [variables["desk"] for variables in kept] == ["+14155550199", "+14155550198"]
    assert [variables["language"] for variables in kept] == ["en-US", "es-US"]


@pytest.mark.parametrize("default", [None, "there"])
def test_an_empty_placeholder_is_rejected_or_takes_the_campaigns_default(
    url: str, tmp_path: Path, default: str | None
) -> None:
    text = campaign_text("vonage", 60)
    assert "{first_name}" in text
    if default is not None:
        text += f'\n[defaults]\nfirst_name = "{default}"\n'
    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(text))
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name\n+12125550101,Ada\n+12125550102,  \n+12125550103,\n")
    report = _import(url, campaign, path)
    with db.session_scope(url) as session:
        kept = session.exec(sa.select(Contact.variables).order_by(Contact.id)).scalars().all()  # type: ignore[call-overload]
    if default is None:
        assert report.accepted == 1
        why = (
            "column 'first_name': empty, and {first_name} is spoken:"
            " fill it in, or give the campaign defaults.first_name"
        )
        assert [(reject.row, reject.value, reject.reason) for reject in report.rejects] == [
            (3, "+12125550102,  ", why),
            (4, "+12125550103,", why),
        ]
        assert [variables["first_name"] for variables in kept] == ["Ada"]
    else:
        assert report.accepted == 3 and report.rejects == []
        assert [variables["first_name"] for variables in kept] == ["Ada", "there", "there"]


def test_a_default_for_no_placeholder_is_refused() -> None:
    text = campaign_text("vonage", 60) + '\n[defaults]\nsurname = "Smith"\n'
    with pytest.raises(Exception, match=r"defaults\.surname: no text of the call has this \{placeholder\}"):
        parse_campaign(text)


def test_a_file_read_in_a_process_of_its_own_imports_as_one_read_here(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big files are read by a process from the fork server (:data:`importer.READ_ASIDE`): the
    same rows taken in the same order, the same rejects with the same row numbers (rows with too
    many fields and blank rows in any of its chunks), and its errors raised here as they would be."""
    lines = ["phone,first_name"]
    for n in range(3000):
        if n % 97 == 1:
            lines.append(f"+1212555{n % 2500:04d},Name{n},one field too many")
        elif n % 89 == 0:
            lines.append("")
        else:
            lines.append(f"+1212555{n % 2500:04d},Name{n}" if n % 7 else f"junk{n},Name{n}")
    path = tmp_path / "contacts.csv"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(importer, "CHUNK_ROWS", 256)  # 12 chunks
    results = []
    for name, aside in (("here", 1 << 40), ("aside", 0)):
        monkeypatch.setattr(importer, "READ_ASIDE", aside)
        with db.session_scope(url) as session:
            campaign = create_campaign(
                session, parse_campaign(campaign_text("vonage", 60).replace("e2e", name))
            )
        report = _import(url, campaign, path)
        with db.session_scope(url) as session:
            stored = session.execute(
                sa.select(Contact.phone, Contact.row_number, Contact.variables)
                .where(Contact.campaign_id == campaign.id)
                .order_by(Contact.id)
            ).all()
        results.append((report.accepted, report.rejects, stored))
    assert results[0] == results[1]
    accepted, rejects, stored = results[1]
    assert accepted == len(stored) > 2000 and [row for _, row, _ in stored] == sorted(
        row for _, row, _ in stored
    )
    too_many = [reject.row for reject in rejects if "fields where the header has 2" in reject.reason]
    assert too_many == [n + 2 for n in range(3000) if n % 97 == 1]
    bad = tmp_path / "bad.csv"
    bad.write_text("number,first_name\n+12125550106,Ada\n")
    with pytest.raises(ImportFailed, match=r"row 1: no 'phone' column"):
        _import(url, campaign, bad)


def test_every_value_is_stored_as_written_whatever_its_characters(
    url: str, campaign: Campaign, tmp_path: Path
) -> None:
    """PostgreSQL gets the rows as COPY's text, where a backslash, a tab or a line break means
    something: the values must come back as the file has them."""
    names = ["back\\slash", 'quo"te', "tab\there", "line\nbreak", "\\N", "Zoë 😀", "bell\x07", "cr\rhere"]
    notes = ["C:\\new\\table", '{"json": "in json"}', "\\t", "plain"]
    path = tmp_path / "contacts.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["phone", "first_name", "note", "timezone"])
        for index, name in enumerate(names):
            zone = "Europe/London" if index % 2 else ""
            writer.writerow([f"+1212555{100 + index:04d}", name, notes[index % len(notes)], zone])
    assert _import(url, campaign, path).accepted == len(names)
    with db.session_scope(url) as session:
        stored = session.exec(select(Contact).order_by(col(Contact.row_number))).all()
        assert [contact.variables["first_name"] for contact in stored] == names
        assert [contact.variables["note"] for contact in stored] == [
            notes[index % len(notes)] for index in range(len(names))
        ]
        assert [contact.zone for contact in stored] == [
            "Europe/London" if index % 2 else None for index in range(len(names))
        ]
        assert {(contact.state, contact.attempts, contact.updated_at) for contact in stored} == {
            ("pending", 0, NOW)
        }


def test_checked_columns_are_stripped_as_python_strips() -> None:
    """A checked column is stripped by Arrow, told the characters ``str.strip`` strips."""
    stripped = "".join(char for char in map(chr, range(sys.maxunicode + 1)) if char.isspace())
    assert stripped == importer.WHITESPACE


def test_a_spoken_timezone_left_empty_takes_the_default_as_the_contacts_own_zone(
    url: str, tmp_path: Path
) -> None:
    text = campaign_text("vonage", 60).replace("{first_name}", "{first_name} ({timezone})", 1)
    text += '\n[defaults]\ntimezone = "Europe/Paris"\n'
    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(text))
    path = tmp_path / "contacts.csv"
    path.write_text("phone,first_name,timezone\n+12125550101,Ada,America/Chicago\n+12125550102,Bo,\n")
    assert _import(url, campaign, path).accepted == 2
    with db.session_scope(url) as session:
        stored = session.exec(select(Contact).order_by(col(Contact.row_number))).all()
        assert [(contact.zone, contact.variables["timezone"]) for contact in stored] == [
            ("America/Chicago", "America/Chicago"),
            ("Europe/Paris", "Europe/Paris"),
        ]


def test_the_length_limit_counts_a_checked_cell_as_kept(url: str, campaign: Campaign, tmp_path: Path) -> None:
    """Spaces around a spoken value are stripped before its length is measured."""
    path = tmp_path / "contacts.csv"
    path.write_text(f"phone,first_name\n+12125550101,Ada{' ' * MAX_FIELD}\n")
    assert _import(url, campaign, path).accepted == 1
    with db.session_scope(url) as session:
        assert session.exec(select(Contact)).one().variables["first_name"] == "Ada"
