"""One dialer per campaign, and per account: the lease a run (or the workers) holds while it runs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlmodel import select

from dialer import db, dispatch, lease
from dialer.cli import main
from dialer.dispatch import place_call
from dialer.embedded import local_runtime, run_until
from dialer.errors import InvalidState, LeaseLost
from dialer.models import Attempt, Campaign, utcnow
from dialer.operations import change_status, get_campaign, progress
from dialer.runner import OFFLINE_URL
from dialer.runtime import Runtime
from dialer.scheduler import pump
from dialer.settings import Settings
from tests.dialer.factories import NOW, FakeVonage, campaign_with_contacts, queued_attempts, runtime

A, B = "dialer run on host-a (pid 1)", "dialer run on host-b (pid 2)"


def _take(url: str, name: str, holder: str, now: object = NOW) -> None:
    with db.session_scope(url) as session:
        lease.take(session, campaign=get_campaign(session, name), holder=holder, now=now)  # type: ignore[arg-type]


def test_a_second_run_is_refused_naming_the_first_until_its_lease_lapses(url: str) -> None:
    campaign_with_contacts(url, ["+12125550106"])
    _take(url, "e2e", A)
    _take(url, "e2e", A, NOW + timedelta(seconds=5))  # renewing is taking again
    with pytest.raises(InvalidState) as caught:
        _take(url, "e2e", B, NOW + timedelta(seconds=10))
    assert str(caught.value).startswith(
        "campaign 'e2e': vonage's account is being dialled by dialer run on host-a (pid 1)"
        " since 2026-11-23 15:00:00 UTC (campaign e2e)"
    )
    _take(url, "e2e", B, NOW + timedelta(seconds=5 + lease.LEASE_SECONDS + 1))  # A stopped renewing
    with db.session_scope(url) as session:
        (holder,) = lease.holders_of(session, campaign_id=get_campaign(session, "e2e").id or 0)
    assert holder.name == B


def test_a_run_of_this_host_that_died_holds_nothing(url: str) -> None:
    """A service restarted after a crash takes its campaign back at once, not after the lease's
    15 s; a live process of this host, or any of another host, is waited for."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    campaign_with_contacts(url, ["+12125550106"])
    _take(url, "e2e", f"dialer run on {here} (pid {dead.pid})")
    _take(url, "e2e", B, NOW + timedelta(seconds=1))
    with pytest.raises(InvalidState, match="dialer run on host-b"):
        _take(url, "e2e", f"dialer run on {here} (pid {os.getpid()})", NOW + timedelta(seconds=2))
    alive = f"dialer run on {here} (pid {os.getpid()})"
    _take(url, "e2e", alive, NOW + timedelta(seconds=5 + lease.LEASE_SECONDS))
    with pytest.raises(InvalidState, match=re.escape(alive)):
        _take(url, "e2e", B, NOW + timedelta(seconds=6 + lease.LEASE_SECONDS))


def test_another_campaign_of_the_same_account_waits_and_another_accounts_does_not(url: str) -> None:
    campaign_with_contacts(url, ["+12125550106"], name="one")
    campaign_with_contacts(url, ["+12125550107"], name="two")
    campaign_with_contacts(url, ["+12125550108"], name="cm-one", provider="cm")
    _take(url, "one", A)
    with pytest.raises(InvalidState, match="vonage's account is being dialled by dialer run on host-a"):
        _take(url, "two", B)
    _take(url, "cm-one", B)


def _words(table: str) -> str:
    """A table's text, its lines and borders taken out."""
    return " ".join(word for word in table.split() if word not in "│┃")


def test_a_running_campaign_nobody_runs_says_so(url: str) -> None:
    campaign_with_contacts(url, ["+12125550106"])  # started, with no run behind it
    with db.session_scope(url) as session:
        report = progress(session, "e2e")
    assert report.unattended_since is not None and report.runner is None
    result = CliRunner().invoke(main, ["status", "e2e"], env={"DIALER_DATABASE_URL": url})
    assert "marked running, but no process has run it since" in " ".join(result.output.split())
    assert "`dialer run e2e` here, or starting the deployment's workers and beat, carries it on" in _words(
        result.output
    )
    # Killed while simulating: what carries it on is the simulation, not real calls.
    with db.session_scope(url) as session:
        lease.take(session, campaign=get_campaign(session, "e2e"), holder=A, now=NOW)
        get_campaign(session, "e2e").simulated = True
    result = CliRunner().invoke(main, ["status", "e2e"], env={"DIALER_DATABASE_URL": url})
    assert "(a run killed, or no workers): `dialer run e2e --simulate` carries it on" in _words(result.output)
    with db.session_scope(url) as session:  # a dead run's name cleared: the workers still leave it
        get_campaign(session, "e2e").runner = None
    result = CliRunner().invoke(main, ["status", "e2e"], env={"DIALER_DATABASE_URL": url})
    assert "(a run killed, or no workers): `dialer run e2e --simulate` carries it on" in _words(result.output)
    with db.session_scope(url) as session:
        lease.take(session, campaign=get_campaign(session, "e2e"), holder=A, now=utcnow())
        report = progress(session, "e2e")
    assert (report.runner, report.unattended_since) == (A, None)


def test_the_workers_leave_an_account_a_run_dials_for_and_start_is_refused(settings: Settings) -> None:
    url = settings.database_url
    campaign_with_contacts(url, ["+12125550106"], name="by-run")
    campaign_with_contacts(url, ["+12125550107"], name="by-workers")
    enqueued: list[tuple[int, float]] = []
    deployment = runtime(settings, FakeVonage(), enqueued)  # beat's runtime: every campaign
    deployment.clock = utcnow
    with db.session_scope(url) as session:
        lease.take(session, campaign=get_campaign(session, "by-run"), holder=A, now=utcnow())
    assert pump(deployment) == 0 and enqueued == []  # not the account's other campaign either
    with db.session_scope(url) as session:
        get_campaign(session, "by-workers").status = "paused"
    result = CliRunner().invoke(main, ["campaign", "resume", "by-workers"], env={"DIALER_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "vonage's account is being dialled by dialer run on host-a (pid 1)" in result.output
    with db.session_scope(url) as session:
        lease.release(session, campaign_id=get_campaign(session, "by-run").id or 0, holder=A)
        get_campaign(session, "by-workers").status = "running"
    assert pump(deployment) == 2  # both now, and the workers hold their leases
    with db.session_scope(url) as session:
        held = {c.name: c.runner for c in session.exec(select(Campaign)).all()}
    assert held == {"by-run": lease.WORKERS, "by-workers": lease.WORKERS}
    with pytest.raises(InvalidState, match="being dialled by the deployment's workers"):
        _take(url, "by-run", A, utcnow())


def test_a_stopped_campaign_is_carried_on_the_way_it_was_run(url: str) -> None:
    """Its last runner's command: `dialer run` (simulated so far: `--simulate` too), or the workers'."""
    campaign_with_contacts(url, ["+12125550106"])
    with db.session_scope(url) as session:
        campaign = get_campaign(session, "e2e")
        assert lease.resume_command(campaign) == (
            "`dialer run e2e` (one process), or `dialer campaign resume e2e` (with the workers running)"
        )
    _take(url, "e2e", A)
    with db.session_scope(url) as session:
        lease.release(session, campaign_id=get_campaign(session, "e2e").id or 0, holder=A)
    with db.session_scope(url) as session:
        campaign = get_campaign(session, "e2e")
        assert lease.holders_of(session, campaign_id=campaign.id or 0)[0].name == A  # remembered, not held
        assert lease.holders(session, provider="vonage", now=NOW, other_than=B) == []
        assert lease.resume_command(campaign) == "`dialer run e2e`"
        campaign.simulated = True
        assert lease.resume_command(campaign) == "`dialer run e2e --simulate`"
        lease.meant_for_workers(session, campaign=campaign, now=NOW)
    with db.session_scope(url) as session:
        campaign = get_campaign(session, "e2e")
        assert lease.resume_command(campaign) == "`dialer campaign resume e2e` (with the workers running)"


def _held_at(url: str, holder: str, seen: object) -> None:
    with db.session_scope(url) as session:
        session.execute(sa.update(Campaign).values(runner=holder, runner_seen=seen, runner_since=seen))


def _queued_under_a(settings: Settings) -> tuple[Runtime, Attempt, FakeVonage, list[tuple[int, float]]]:
    """One queued attempt of a campaign whose lease A holds (renewed at ``NOW``), and A's runtime
    with its provider and what it enqueued."""
    url = settings.database_url
    campaign = campaign_with_contacts(url, ["+12125550106"])
    (attempt,) = queued_attempts(url, campaign, 1)
    _held_at(url, A, NOW)
    provider, enqueued = FakeVonage(), []
    rt = runtime(settings, provider, enqueued)
    rt.holder = A
    return rt, attempt, provider, enqueued


def _went_back_unsent(
    url: str, attempt: Attempt, provider: FakeVonage, enqueued: list[tuple[int, float]]
) -> None:
    assert provider.requests == []
    with db.session_scope(url) as session:
        assert session.get(Attempt, attempt.id).status == "queued"  # type: ignore[union-attr]
    assert enqueued == [(attempt.id, 0.0)]


def test_a_run_claims_a_call_only_under_its_own_lease_with_time_left(any_db: Settings) -> None:
    """A run stalled past its lease (stopped, starved of CPU) places nothing once another may
    have taken the campaign over; on PostgreSQL, whatever the session's time zone."""
    url = any_db.database_url
    if url.startswith("postgresql"):
        engine = db.get_engine(url)
        with engine.connect() as connection:  # +14 h: a lease read in local time would be 14 h stale
            connection.execute(
                sa.text(f"ALTER DATABASE \"{engine.url.database}\" SET timezone = 'Pacific/Kiritimati'")
            )
            connection.commit()
        engine.dispose()
    rt, attempt, provider, _ = _queued_under_a(any_db)
    short = lease.LEASE_SECONDS - lease.SEND_WINDOW + 1
    for holder, seen in ((A, NOW - timedelta(seconds=short)), (B, NOW)):  # too little left; another's
        _held_at(url, holder, seen)
        place_call(rt, attempt.id or 0)
        assert provider.requests == []
    _held_at(url, A, NOW - timedelta(seconds=short - 2))
    place_call(rt, attempt.id or 0)
    assert len(provider.requests) == 1


def test_a_claimed_call_that_cannot_leave_within_the_send_window_goes_back_unsent(
    any_db: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, attempt, provider, enqueued = _queued_under_a(any_db)
    monkeypatch.setattr(lease, "SEND_WINDOW", -1.0)  # its time is up as soon as it is claimed
    place_call(rt, attempt.id or 0)
    _went_back_unsent(any_db.database_url, attempt, provider, enqueued)


def test_a_run_whose_lease_was_taken_over_is_told_by_whom(url: str) -> None:
    campaign_with_contacts(url, ["+12125550106"])
    _take(url, "e2e", A)
    _take(url, "e2e", B, NOW + timedelta(seconds=lease.LEASE_SECONDS + 1))
    with db.session_scope(url) as session, pytest.raises(LeaseLost) as caught:
        lease.keep(session, campaign_id=get_campaign(session, "e2e").id or 0, holder=A, now=NOW)
    assert str(caught.value) == "dialer run on host-b (pid 2) took it over at 15:00:16 UTC"


def test_a_call_claimed_just_before_a_stall_is_not_sent_after_it(
    any_db: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send window runs from before the claim: a stall between the claim and the send (a
    SIGSTOP, a suspended host) counts against it."""
    rt, attempt, provider, enqueued = _queued_under_a(any_db)
    clock = [100.0]
    monkeypatch.setattr(dispatch, "lease_clock", lambda: clock[0])
    claim = dispatch._claim

    def stalled_after(*args: object, **kwargs: object) -> bool:
        claimed = claim(*args, **kwargs)  # type: ignore[arg-type]
        clock[0] += lease.SEND_WINDOW / 2 + 0.1
        return claimed

    monkeypatch.setattr(dispatch, "_claim", stalled_after)
    place_call(rt, attempt.id or 0)
    _went_back_unsent(any_db.database_url, attempt, provider, enqueued)


def test_a_request_gone_stale_while_it_waits_at_the_gate_takes_no_turn(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, attempt, provider, enqueued = _queued_under_a(settings)
    clock = [100.0]
    monkeypatch.setattr(dispatch, "lease_clock", lambda: clock[0])
    turns = []

    def admit(gate: object, ticket: str) -> float:
        turns.append(ticket)
        return 1.0  # wait a second: the request's window passes meanwhile

    monkeypatch.setattr(rt.limiter, "admit", admit)
    rt.sleep = lambda seconds: clock.__setitem__(0, clock[0] + seconds + lease.SEND_WINDOW)
    place_call(rt, attempt.id or 0)
    _went_back_unsent(settings.database_url, attempt, provider, enqueued)
    assert len(turns) == 1


def test_a_runs_connections_to_its_provider_take_half_the_send_window_at_most(settings: Settings) -> None:
    rt = local_runtime(settings, lambda attempt_id, countdown: None, holder=A)
    assert rt.http.timeout.connect == lease.SEND_WINDOW / 2


def test_a_run_woken_after_another_took_its_campaign_does_nothing_more(settings: Settings) -> None:
    url = settings.database_url
    campaign = campaign_with_contacts(url, ["+12125550106", "+12125550107"])
    _held_at(url, B, utcnow())
    nowhere = settings.model_copy(
        update={"vonage": settings.vonage.model_copy(update={"base_url": OFFLINE_URL})}
    )
    deadline = time.monotonic() + 10
    with pytest.raises(LeaseLost, match="dialer run on host-b"):
        run_until(nowhere, lambda: time.monotonic() > deadline, only=frozenset({campaign.id or 0}), holder=A)
    with db.session_scope(url) as session:
        assert session.exec(select(Attempt)).all() == []  # nothing pumped for a campaign not its own


def test_the_lease_is_renewed_while_a_step_takes_long(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long sweep or pump must not let the lease run short: claims need time left on it."""
    monkeypatch.setattr(lease, "LEASE_SECONDS", 1.0)  # renewed every 0.2 s
    url = settings.database_url
    campaign = campaign_with_contacts(url, ["+12125550106"])
    with db.session_scope(url) as session:  # paused: nothing is called
        change_status(session, name="e2e", action="pause", now=NOW)
    _held_at(url, A, utcnow())
    seen = []

    def slow_tick() -> None:
        seen.append(_seen(url))
        time.sleep(0.6)
        seen.append(_seen(url))

    run_until(
        settings, lambda: len(seen) >= 2, on_tick=slow_tick, only=frozenset({campaign.id or 0}), holder=A
    )
    assert seen[1] > seen[0]


def _seen(url: str) -> object:
    with db.session_scope(url) as session:
        return session.execute(sa.select(Campaign.runner_seen)).scalar_one()  # type: ignore[call-overload]


def test_a_released_lease_is_not_taken_back_by_a_late_renewal(url: str) -> None:
    """A renewal that comes after the run gave its lease up (a keeper thread outliving its
    stop) must not make the campaign look held by a process that has finished."""
    campaign_with_contacts(url, ["+12125550106"])
    _take(url, "e2e", A)
    with db.session_scope(url) as session:
        campaign_id = get_campaign(session, "e2e").id or 0
        lease.release(session, campaign_id=campaign_id, holder=A)
    with db.session_scope(url) as session:
        assert lease.renew(session, campaign_ids=[campaign_id], holder=A, now=NOW) == 0
        with pytest.raises(LeaseLost, match="its lease was released meanwhile"):
            lease.keep(session, campaign_id=campaign_id, holder=A, now=NOW)
    _take(url, "e2e", B, NOW + timedelta(seconds=1))  # free at once
