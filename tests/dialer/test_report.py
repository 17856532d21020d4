from __future__ import annotations

import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from dialer import db
from dialer.cli import main
from dialer.models import Campaign
from dialer.report import bar_chart, build_report, render_html
from tests.dialer.factories import NOW


def test_the_report_counts_reach_answers_outcomes_attempts_time_and_cost(
    url: str, finished: Campaign
) -> None:
    with db.session_scope(url) as session:
        report = build_report(session, "e2e")
    assert report.progress.contacts == 3
    assert report.reached == 1
    assert report.progress.answers == {"question": {"confirm": 1}}
    assert dict(report.progress.attempts) == {"busy": 2, "completed": 1}
    assert report.attempts_per_contact == {0: 1, 1: 1, 2: 1}
    assert report.talk_seconds == 42
    assert report.cost == Decimal("0.0084")
    assert (report.first_call_at, report.last_call_at) == (
        NOW.replace(second=11),
        NOW.replace(minute=1, second=11),
    )
    assert dict(report.summary())["attempts per contact called"] == "1.50"
    assert dict(report.summary())["reached"] == "1 (33.3%)"
    assert report.funnel == [("answered the call", 1), ("answered question", 1)]


def test_report_prints_the_summary_and_writes_a_page_that_needs_no_network(
    url: str, finished: Campaign, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["report", "e2e", "--html", str(page)], env={"DIALER_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output
    lines = {re.sub(r"\s+", " ", line.strip("│ ")) for line in result.output.splitlines()}
    assert {"contacts │ 3", "reached │ 1 (33.3%)", "confirm │ 1", "busy │ 2", "talk time │ 0:00:42"} <= {
        re.sub(r"\s*│\s*", " │ ", line) for line in lines
    }
    text = page.read_text()
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    assert "<script" not in text
    _well_formed(text)
    assert text.count("<svg") == 5
    assert ">confirm<" in text and "1 (100%)" in text
    assert "Answers to question" in text and "From the answer to the end of the call" in text


def test_an_empty_chart_says_so_and_labels_are_escaped() -> None:
    assert "nothing yet" in bar_chart("DTMF answers by choice", [])
    chart = bar_chart("<b>", [("<script>", 3), ("yes", 1)])
    assert "<script>" not in chart and "&lt;script&gt;" in chart
    widths = [float(width) for width in re.findall(r'<rect [^>]*width="([\d.]+)"', chart)]
    assert widths == [360.0, 120.0]  # bars proportional to the counts


def test_a_report_page_for_a_campaign_with_no_calls_yet_still_renders(url: str) -> None:
    from campaigns.spec import parse_campaign
    from dialer.operations import create_campaign
    from tests.e2e import campaign_text

    with db.session_scope(url) as session:
        create_campaign(session, parse_campaign(campaign_text("vonage", 60)))
        report = build_report(session, "e2e")
    assert dict(report.summary())["cost"] == "not reported"
    page = render_html(report, now=NOW)
    _well_formed(page)
    assert "report made 2026-11-23 15:00 UTC" in page


def _well_formed(page: str) -> None:
    """Every element closed in order (void elements aside)."""

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag not in ("meta", "br"):
                self.open.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.open and self.open.pop() == tag, (tag, self.open)

    checker = Checker()
    checker.feed(page)
    assert checker.open == []
