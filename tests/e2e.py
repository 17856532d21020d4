"""Helpers for end-to-end runs: a campaign with known behaviour per number, and its expectations."""

from __future__ import annotations

import csv
import itertools
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import sqlalchemy as sa
from sqlmodel import col, select

from campaigns.spec import parse_campaign
from dialer import db
from dialer.errors import ConfigurationError
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer
from dialer.operations import check_provider_can
from dialer.providers import get_provider

RETRY_DELAY = 2.0
CAMPAIGN = """
name = "e2e"
provider = "{provider}"
caller_id = "+14155550100"

[message]
text = "Hello {{first_name}}, this is a reminder."
{question}
[retry]
max_attempts = 3
retry_on = ["busy", "no_answer", "failed"]
delay = "{delay}s"

[window]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

[pacing]
max_concurrent = 500
"""

QUESTION = """
[question]
prompt = "Press 1 to confirm or 2 to cancel."
attempts = 2
pattern = "[12]"
choices = { "1" = "confirm", "2" = "cancel" }
"""

#: What the retry policy above must make of each simulated callee, by the number's last digit:
#: the attempts' outcomes in order, the contact's result, and the DTMF digits stored.
EXPECTED: dict[str, tuple[list[str], str, str | None]] = {
    "0": (["busy", "busy", "busy"], "exhausted", None),
    "1": (["busy", "completed"], "dtmf_answered", "1"),
    "2": (["no_answer", "completed"], "dtmf_answered", "2"),
    "3": (["failed", "completed"], "dtmf_answered", "1"),
    "4": (["rejected"], "exhausted", None),
    "5": (["machine"], "exhausted", None),
    "6": (["completed"], "dtmf_answered", "1"),
    "7": (["completed"], "dtmf_answered", "1"),
    "8": (["completed"], "dtmf_answered", "2"),
    "9": (["completed"], "reached", None),
}
CHOICES = {"1": "confirm", "2": "cancel"}


def refusal(text: str) -> str:
    """What ``dialer campaign create`` says against a campaign file's text ("" when it takes it)."""
    try:
        check_provider_can(parse_campaign(text), source="campaign.toml")
    except ConfigurationError as error:
        return str(error)
    return ""


def campaign_text(provider: str = "vonage", delay: float = RETRY_DELAY) -> str:
    """The test campaign; it asks its question only where the provider can collect DTMF."""
    question = QUESTION if get_provider(provider).capabilities.dtmf else ""
    return CAMPAIGN.format(provider=provider, delay=delay, question=question)


def expected(provider: str) -> dict[str, tuple[list[str], str, str | None]]:
    """EXPECTED as a provider without DTMF or machine detection must see it."""
    can = get_provider(provider).capabilities
    table = dict(EXPECTED)
    if provider == "routee":  # Routee reports a callee who declines as NoAnswer, which is retried
        table["4"] = (["no_answer", "no_answer", "no_answer"], "exhausted", None)
    if not can.machine_detection:
        table["5"] = (["completed"], "reached", None)  # the machine is taken for a person
    if not can.dtmf:
        table = {
            digit: (outcomes, "reached" if result == "dtmf_answered" else result, None)
            for digit, (outcomes, result, _) in table.items()
        }
    return table


def write_campaign(directory: Path, *, provider: str = "vonage", delay: float = RETRY_DELAY) -> Path:
    path = directory / "campaign.toml"
    path.write_text(campaign_text(provider, delay))
    return path


def write_contacts(directory: Path, count: int) -> Path:
    """``count`` valid US numbers whose last digits cycle through every scenario."""
    path = directory / "contacts.csv"
    areas = ["212", "312", "415", "617", "713", "305", "206", "404", "503", "702"]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["phone", "first_name"])
        for index in range(count):
            writer.writerow([f"+1{areas[index // 100]}55501{index % 100:02d}", f"Person {index}"])
    return path


def campaign_status(url: str) -> str:
    with db.session_scope(url) as session:
        return session.exec(select(col(Campaign.status)).where(col(Campaign.name) == "e2e")).one()


def check_campaign(
    url: str,
    *,
    simulator_url: str,
    export: Path,
    queueing: float,
    provider: str = "vonage",
    delay: float = RETRY_DELAY,
) -> None:
    """Every contact final, retries as the policy says, every DTMF answer stored, no double dial,
    and the export equal to the database.

    A retry is scheduled exactly the policy's delay after the previous attempt ended and never
    placed before; ``queueing`` is a loose sanity bound on how long it may then wait behind contacts
    that fell due earlier (the first pass, at the provider's rate, on a busy machine).
    """
    with db.session_scope(url) as session:
        campaign = session.exec(select(Campaign).where(col(Campaign.name) == "e2e")).one()
        contacts = session.exec(select(Contact).where(col(Contact.campaign_id) == campaign.id)).all()
        attempts = session.exec(select(Attempt).order_by(col(Attempt.contact_id), col(Attempt.number))).all()
        answers = {a.attempt_id: a for a in session.exec(select(DtmfAnswer)).all()}
        live = session.scalar(
            sa.select(sa.func.count()).select_from(Attempt).where(col(Attempt.ended_at).is_(None))
        )
    table = expected(provider)
    assert campaign.status == "completed"
    assert live == 0
    by_contact: dict[int, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_contact[attempt.contact_id].append(attempt)

    for contact in contacts:
        outcomes, result, digits = table[contact.phone[-1]]
        tried = by_contact[contact.id or 0]
        assert contact.state == "done", contact.phone
        assert [a.status for a in tried] == outcomes, contact.phone
        assert [a.number for a in tried] == list(range(1, len(outcomes) + 1))
        assert contact.result == result, contact.phone
        assert contact.attempts == len(outcomes)
        for previous, following in itertools.pairwise(tried):
            assert previous.ended_at is not None and following.dispatched_at is not None
            gap = following.dispatched_at - previous.ended_at
            assert timedelta(seconds=delay) <= gap < timedelta(seconds=delay + queueing), (contact.phone, gap)
        if len(tried) > 1:  # the last retry was scheduled exactly the policy's delay after the attempt before
            assert tried[-2].ended_at is not None
            assert contact.next_attempt_at == tried[-2].ended_at + timedelta(seconds=delay), contact.phone
        stored = [answers[a.id].digits for a in tried if a.id in answers and answers[a.id].valid]
        assert stored == ([digits] if digits else []), contact.phone

    # The simulator's own log: each attempt placed exactly once, and nothing else placed.
    log = httpx.get(f"{simulator_url}/_simulator/log", timeout=10).json()
    placed = Counter(p["call_id"] for p in log["placements"])
    assert all(n == 1 for n in placed.values())
    assert set(placed) == {a.provider_call_id for a in attempts}
    per_number = Counter(p["to"].lstrip("+") for p in log["placements"])
    assert per_number == Counter(c.phone.lstrip("+") for c in contacts for _ in by_contact[c.id or 0])

    exported = pd.read_csv(export, dtype=str, keep_default_na=False).set_index("phone")
    assert len(exported) == len(contacts)
    for contact in contacts:
        row = exported.loc[contact.phone]
        outcomes, result, digits = table[contact.phone[-1]]
        assert row["result"] == contact.result
        assert int(row["attempts"]) == contact.attempts
        assert row["last_outcome"] == outcomes[-1]
        assert row["dtmf_digits"] == (digits or "")
        assert row["dtmf_choice"] == (CHOICES[digits] if digits else "")


SURVEY = """
name = "e2e"
provider = "{provider}"
caller_id = "+14155550100"

[flow]
start = "welcome"

[flow.steps.welcome]
say = "Hello {{first_name}}, three questions about your visit."
next = "rating"

[flow.steps.rating]
say = "Was your visit good? Press 1 for yes, 2 for no. To speak to us press 0, to stop these calls press 9."
choices = {{ "1" = "good", "2" = "poor" }}
on = {{ "1" = "recommend", "2" = "problem", "0" = "agent", "9" = "stop" }}
attempts = 2
retry = "Sorry, I did not get that."
no_input = "goodbye"
invalid = "goodbye"

[flow.steps.problem]
say = "What went wrong? Press 1 for the wait, 2 for the staff, 3 for the cost."
choices = {{ "1" = "waiting", "2" = "staff", "3" = "cost" }}
next = "recommend"

[flow.steps.recommend]
say = "Would you recommend us? Press 1 for yes, 2 for no, star to hear this again."
choices = {{ "1" = "yes", "2" = "no" }}
on = {{ "*" = "repeat" }}
next = "goodbye"

[flow.steps.agent]
say = "Connecting you."
action = "transfer"
to_column = "agent"

[flow.steps.stop]
say = "You will not be called again. Goodbye."
action = "optout"

[flow.steps.goodbye]
say = "Thank you. Goodbye."

[window]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
"""
"""Three questions with a branch (the second depends on the first), an opt-out and a transfer to
a number of each contact's own: what every provider that can run it runs end to end."""

AGENT_ANSWERS, AGENT_BUSY = "+12125550198", "+12125550190"
"""Transfer targets: the simulators' table has a number ending in 8 answer, one ending in 0 busy."""


def survey_text(provider: str) -> str:
    return SURVEY.format(provider=provider)
