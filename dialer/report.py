"""A campaign's results report: a summary for the terminal and a self-contained HTML page.

Every figure is one aggregate query, so a report on a million contacts reads no rows into
Python. The HTML page draws its charts as inline SVG: it needs no network to be opened.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Session, col

from campaigns.outcomes import AttemptStatus, ContactResult
from dialer.models import Attempt, Contact, DtmfAnswer, utcnow
from dialer.operations import Progress, get_campaign, progress
from dialer.runtime import spec_of


@dataclass(frozen=True)
class Report:
    """:class:`Progress` and what only a report needs."""

    progress: Progress
    attempts_per_contact: dict[int, int]
    """Attempts made -> how many contacts made that many."""
    invalid_answers: int
    talk_seconds: int
    cost: Decimal | None
    """The sum of the prices the provider reported, in its currency; None when it reported none."""
    first_call_at: datetime | None
    last_call_at: datetime | None
    funnel: list[tuple[str, int]]
    """Contacts who answered a call, then who answered each question (in the flow's order), and
    who were transferred or opted out."""
    by_caller_id: list[tuple[str, int, int]]
    """Each caller ID the calls went out from: its calls placed, and those answered."""
    by_route: list[tuple[str, int, int, Decimal | None]]
    """Each provider the calls went through: its calls, those answered, and their cost."""

    def route_rows(self) -> list[tuple[str, str]]:
        """Calls, answers and cost of each route, as (provider, text) rows."""
        return [
            (
                route,
                f"{calls:,} calls, {answered:,} answered"
                + (f", cost {cost:.4f}" if cost is not None else ""),
            )
            for route, calls, answered, cost in self.by_route
        ]

    def caller_id_rates(self) -> list[tuple[str, str]]:
        """The answer rate of each caller ID, as (caller ID, "answered of calls (rate)") rows."""
        return [
            (caller_id, f"{answered:,} of {calls:,} answered ({answered / calls:.0%})")
            for caller_id, calls, answered in self.by_caller_id
            if calls
        ]

    @property
    def reached(self) -> int:
        results = self.progress.results
        return sum(
            results[r] for r in (ContactResult.REACHED, ContactResult.DTMF_ANSWERED, ContactResult.OPTED_OUT)
        )

    @property
    def attempts(self) -> int:
        return sum(self.progress.attempts.values())

    def summary(self) -> list[tuple[str, str]]:
        """The headline figures as (label, value) rows, for the terminal and the page alike."""
        contacts = self.progress.contacts

        def share(count: int) -> str:
            return f"{count:,} ({count / contacts:.1%})" if contacts else f"{count:,}"

        called = sum(n for made, n in self.attempts_per_contact.items() if made > 0)
        rows = [
            ("contacts", f"{contacts:,}"),
            ("finished", share(self.progress.done)),
            ("reached", share(self.reached)),
            ("DTMF answered", share(self.progress.results[ContactResult.DTMF_ANSWERED])),
            ("opted out", share(self.progress.results[ContactResult.OPTED_OUT])),
            ("invalid DTMF answers", f"{self.invalid_answers:,}"),
            ("attempts", f"{self.attempts:,}"),
            ("attempts per contact called", f"{self.attempts / called:.2f}" if called else "-"),
            ("talk time", _clock(self.talk_seconds)),
            ("cost", f"{self.cost:.4f} (provider's currency)" if self.cost is not None else "not reported"),
        ]
        if self.first_call_at and self.last_call_at:
            rows.append(("calls placed", f"{_stamp(self.first_call_at)} to {_stamp(self.last_call_at)}"))
        return rows


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def build_report(session: Session, name: str) -> Report:
    """Read a campaign's report from the database."""
    counts = progress(session, name)
    campaign = get_campaign(session, name)
    ours = col(Attempt.campaign_id) == campaign.id
    per_contact = {
        made: count
        for made, count in session.execute(
            sa.select(col(Contact.attempts), sa.func.count())
            .where(col(Contact.campaign_id) == campaign.id)
            .group_by(col(Contact.attempts))
        )
    }
    talk, cost, first, last = session.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(col(Attempt.duration)), 0),
            sa.func.sum(sa.cast(col(Attempt.price), sa.Numeric(18, 8))),
            sa.func.min(col(Attempt.dispatched_at)),
            sa.func.max(col(Attempt.dispatched_at)),
        ).where(ours)
    ).one()
    invalid = session.scalar(
        sa.select(sa.func.count())
        .select_from(DtmfAnswer)
        .join(Attempt, col(Attempt.id) == col(DtmfAnswer.attempt_id))
        .where(ours, ~col(DtmfAnswer.valid))
    )
    flow = spec_of(campaign).call_flow
    answered_each = dict(
        session.execute(
            sa.select(col(DtmfAnswer.step), sa.func.count(sa.distinct(col(DtmfAnswer.contact_id))))
            .join(Attempt, col(Attempt.id) == col(DtmfAnswer.attempt_id))
            .where(ours, col(DtmfAnswer.valid))
            .group_by(col(DtmfAnswer.step))
        ).all()
    )
    reached, transferred, opted_out = session.execute(
        sa.select(
            sa.func.count(sa.distinct(col(Attempt.contact_id))).filter(
                col(Attempt.status) == AttemptStatus.COMPLETED
            ),
            sa.func.count(sa.distinct(col(Attempt.contact_id))).filter(col(Attempt.transfer_to).is_not(None)),
            sa.func.count(sa.distinct(col(Attempt.contact_id))).filter(col(Attempt.opted_out)),
        ).where(ours)
    ).one()
    by_caller_id = [
        (str(caller_id), int(calls), int(answered))
        for caller_id, calls, answered in session.execute(
            sa.select(
                col(Attempt.caller_id),
                sa.func.count(),
                sa.func.count().filter(col(Attempt.answered_at).is_not(None)),
            )
            .where(ours, col(Attempt.caller_id).is_not(None))
            .group_by(col(Attempt.caller_id))
            .order_by(col(Attempt.caller_id))
        )
    ]
    by_route = [
        (str(route), int(calls), int(answered), None if cost is None else Decimal(str(cost)))
        for route, calls, answered, cost in session.execute(
            sa.select(
                col(Attempt.provider),
                sa.func.count(),
                sa.func.count().filter(col(Attempt.answered_at).is_not(None)),
                sa.func.sum(sa.cast(col(Attempt.price), sa.Numeric(18, 8))),
            )
            .where(ours, col(Attempt.dispatched_at).is_not(None))
            .group_by(col(Attempt.provider))
            .order_by(col(Attempt.provider))
        )
    ]
    funnel = [("answered the call", reached)]
    funnel += [(f"answered {step}", answered_each.get(step, 0)) for step in flow.questions()]
    if any(step.action == "transfer" for step in flow.steps.values()):
        funnel.append(("transferred", transferred))
    if any(step.action == "optout" for step in flow.steps.values()):
        funnel.append(("opted out", opted_out))
    return Report(
        progress=counts,
        attempts_per_contact=per_contact,
        invalid_answers=invalid or 0,
        talk_seconds=int(talk),
        cost=None if cost is None else Decimal(str(cost)),
        first_call_at=first,
        last_call_at=last,
        funnel=funnel,
        by_caller_id=by_caller_id,
        by_route=by_route,
    )


# -- the HTML page ----------------------------------------------------------------------------------

_COLOURS = {
    ContactResult.REACHED: "#2e7d32",
    ContactResult.DTMF_ANSWERED: "#1b5e20",
    ContactResult.OPTED_OUT: "#4527a0",
    ContactResult.EXHAUSTED: "#c62828",
    ContactResult.UNKNOWN: "#546e7a",
    ContactResult.DNC: "#6a1b9a",
    ContactResult.INVALID: "#8d6e63",
    ContactResult.CANCELLED: "#757575",
    AttemptStatus.COMPLETED: "#2e7d32",
    AttemptStatus.BUSY: "#ef6c00",
    AttemptStatus.NO_ANSWER: "#f9a825",
    AttemptStatus.FAILED: "#c62828",
    AttemptStatus.REJECTED: "#ad1457",
    AttemptStatus.MACHINE: "#5d4037",
    AttemptStatus.UNKNOWN: "#546e7a",
}
_DEFAULT_COLOUR = "#1565c0"


def bar_chart(title: str, counts: list[tuple[str, int]]) -> str:
    """A horizontal bar chart as inline SVG, one labelled bar per (label, count)."""
    if not counts:
        return f"<figure><figcaption>{html.escape(title)}</figcaption><p>nothing yet</p></figure>"
    label_width, bar_width, row = 170, 360, 26
    biggest = max(count for _, count in counts) or 1
    total = sum(count for _, count in counts) or 1
    height = row * len(counts) + 8
    bars = []
    for index, (label, count) in enumerate(counts):
        y = 4 + index * row
        width = max(1.0, bar_width * count / biggest) if count else 0.0
        colour = _COLOURS.get(label, _DEFAULT_COLOUR)  # type: ignore[call-overload]
        bars.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{width:.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{html.escape(label)}: {count:,}</title></rect>"
            f'<text x="{label_width + width + 6:.1f}" y="{y + 16}">{count:,} ({count / total:.0%})</text>'
        )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{html.escape(title)}" '
        f'width="{label_width + bar_width + 110}" height="{height}" font-size="13">'
        f"{''.join(bars)}</svg></figure>"
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #212121; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } .meta { color: #616161; margin-top: 0; }
table { border-collapse: collapse; margin: 1rem 0 2rem; } td { padding: 0.25rem 1.2rem 0.25rem 0; }
td:last-child { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem 3rem; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: 0.4rem; }
svg text { fill: #212121; }
"""


def _breakdown(title: str, rows: list[tuple[str, str]]) -> str:
    """A titled two-column table of ``rows``, or nothing when there is one row or none to compare."""
    if len(rows) < 2:
        return ""
    cells = "".join(f"<tr><td>{html.escape(key)}</td><td>{html.escape(text)}</td></tr>" for key, text in rows)
    return f"<h2>{html.escape(title)}</h2><table>{cells}</table>"


def render_html(report: Report, *, now: datetime | None = None) -> str:
    """The report as one HTML page with inline CSS and SVG charts (no scripts, no network)."""
    counts = report.progress
    summary = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{html.escape(value)}</td></tr>"
        for label, value in report.summary()
    )
    by_count = sorted(counts.results.items(), key=lambda item: -item[1])
    pending = counts.contacts - counts.done
    if pending:
        by_count.append(("not finished", pending))
    outcomes = sorted(
        ((status, n) for status, n in counts.attempts.items() if AttemptStatus(status).is_final),
        key=lambda item: -item[1],
    )
    charts = [
        bar_chart("Contacts by result", by_count),
        bar_chart("Attempts by outcome", outcomes),
        bar_chart("From the answer to the end of the call", report.funnel),
        *(
            bar_chart(f"Answers to {step}", sorted(answers.items(), key=lambda item: -item[1]))
            for step, answers in counts.answers.items()
        ),
        bar_chart(
            "Contacts by attempts made",
            [
                (f"{made} attempt{'s' if made != 1 else ''}", n)
                for made, n in sorted(report.attempts_per_contact.items())
            ],
        ),
    ]
    name = html.escape(counts.name)
    note = f"<p>{html.escape(counts.reason)}</p>" if counts.reason else ""
    by_route = _breakdown("By route", report.route_rows())
    by_caller = _breakdown("Answer rate by caller ID", report.caller_id_rates())
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{name}: campaign report</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{name}</h1>"
        f'<p class="meta">{html.escape(counts.provider)} · {html.escape(counts.status)} · '
        f"report made {_stamp(now or utcnow())}</p>{note}"
        f"<table>{summary}</table>{by_route}{by_caller}"
        f'<div class="charts">{"".join(charts)}</div>'
        "</body></html>\n"
    )
