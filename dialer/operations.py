"""Campaign operations behind the CLI: create, start, pause, resume, cancel, and progress counts."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns import window as windows
from campaigns.flow import one_question
from campaigns.outcomes import LIVE, AttemptStatus, CampaignStatus, ContactResult, ContactState
from campaigns.phones import InvalidPhone, normalise
from campaigns.spec import CampaignSpec, SpecError, Window, parse_campaign
from dialer import notify
from dialer.db import Db, changed, session_scope
from dialer.errors import ConfigurationError, InvalidState, NotFound
from dialer.files import not_a_file
from dialer.lease import WORKERS, holders, lapsed
from dialer.models import (
    Attempt,
    Campaign,
    Contact,
    DncEntry,
    DtmfAnswer,
    Notification,
    WebhookEvent,
    ZoneGroup,
    utcnow,
)
from dialer.providers import account_limit, get_provider
from dialer.providers.base import Provider, flow_field, step_field
from dialer.runtime import spec_from, spec_of
from dialer.settings import Settings
from dialer.zones import group_zones

log = logging.getLogger("dialer.operations")


def read_campaign_file(path: Path, settings: Settings | None = None) -> CampaignSpec:
    """Read and validate a campaign file, naming the file and field of any problem; with
    ``settings``, also against the provider account's rate limit."""
    if (why := not_a_file(path)) is not None:
        raise ConfigurationError(f"{path}: {why}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad saves UTF-8 with a byte-order mark
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: cannot be read: {error}") from None
    try:
        spec = parse_campaign(text)
    except SpecError as error:
        raise ConfigurationError(f"{path}: {error}") from None
    if spec.caller_ids.file is not None:
        numbers = (
            *spec.caller_ids.numbers,
            *_caller_ids_file(path.parent / spec.caller_ids.file, spec.region),
        )
        spec = spec.model_copy(
            update={"caller_ids": spec.caller_ids.model_copy(update={"numbers": numbers, "file": None})}
        )
    check_provider_can(spec, source=str(path), settings=settings)
    if settings is not None and spec.notify.url and settings.notify_secret is None:
        raise ConfigurationError(
            f"{path}: notify.url: DIALER_NOTIFY_SECRET is not set, and results are only sent signed"
        )
    return spec


def _caller_ids_file(path: Path, region: str | None) -> list[str]:
    """The numbers of a caller-ID file, one per line (blank lines and ``#`` comments skipped), in E.164."""
    if (why := not_a_file(path)) is not None:
        raise ConfigurationError(f"caller_ids.file: {path}: {why}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"caller_ids.file: {path}: cannot be read: {error}") from None
    numbers = []
    for row, line in enumerate(lines, start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            numbers.append(normalise(value, region))
        except InvalidPhone as error:
            raise ConfigurationError(f"{path}: line {row}: {value!r}: {error}") from None
    if not numbers:
        raise ConfigurationError(f"caller_ids.file: {path}: no numbers in it")
    return numbers


def check_provider_can(spec: CampaignSpec, *, source: str, settings: Settings | None = None) -> None:
    """Refuse a campaign that asks its provider for something it cannot do, or more calls per
    second than the provider account allows (when ``settings`` say what the account is)."""
    try:
        provider = get_provider(spec.provider)
        if settings is not None:
            settings.provider_settings(spec.provider)
    except ConfigurationError as error:
        raise ConfigurationError(f"{source}: provider: {error}") from None
    problems = [f"{provider.title} cannot do {what}" for what in _beyond(provider, spec)]
    flow = spec.call_flow
    if not provider.replies_mid_call and isinstance(shape := one_question(flow, provider.title), tuple):
        problems.append(f"flow.{shape[0]}: {shape[1]}")
    if provider.languages is not None and flow.language not in provider.languages:
        problems.append(f"{flow_field(spec, 'language')}: {provider.title} does not speak {flow.language!r}")
    problems += provider.check_campaign(spec)
    for index, route in enumerate(spec.fallback):  # the call as each route would place it
        try:
            check_provider_can(
                spec.model_copy(update={"provider": route, "fallback": ()}), source=route, settings=settings
            )
        except ConfigurationError as error:
            problems.append(f"fallback[{index}]: {str(error).replace(f'{route}: provider: ', '', 1)}")
    for index, number in enumerate(spec.caller_ids.numbers):  # each as the provider checks caller_id
        if number != spec.caller_id:
            problems += [
                problem.replace("caller_id:", f"caller_ids.numbers[{index}]:", 1)
                for problem in provider.check_campaign(spec.model_copy(update={"caller_id": number}))
                if problem.startswith("caller_id:")
            ]
    if settings is not None and spec.pacing.calls_per_second is not None:
        limit = account_limit(spec.provider, settings.provider_settings(spec.provider))
        if spec.pacing.calls_per_second > limit:
            problems.append(
                f"pacing.calls_per_second: {spec.pacing.calls_per_second:g} is more than the {provider.title}"
                f" account allows ({limit:g} per second; DIALER_{spec.provider.upper()}__RATE_LIMIT)"
            )
    if problems:
        raise ConfigurationError(f"{source}: " + "; ".join(problems))


def _beyond(provider: Provider, spec: CampaignSpec) -> Iterator[str]:
    """What in the campaign the provider has no way to do, each named by its field."""
    can, flow = provider.capabilities, spec.call_flow
    if flow.ssml and not can.ssml:
        yield flow_field(spec, "ssml")
    if "machine" in spec.retry.retry_on and not can.machine_detection:
        yield "retry.retry_on machine"
    if spec.call.max_duration is not None and not can.max_duration:
        yield "call.max_duration"
    if spec.call.on_machine not in can.on_machine:
        yield f"call.on_machine = {spec.call.on_machine!r}"
    for name, step in flow.steps.items():
        if step.asks and not can.dtmf:
            yield "question (DTMF)" if spec.flow is None else f"flow.steps.{name} (a question: DTMF keys)"
        if step.audio is not None and not can.audio:
            yield step_field(spec, name, "audio")
        elif step.audio and can.audio_formats and not step.audio.lower().endswith(can.audio_formats):
            yield f"{step_field(spec, name, 'audio')} other than {', '.join(can.audio_formats)} files"
        if (step.action == "transfer" and not can.transfer) or (step.action == "record" and not can.record):
            yield f"{step_field(spec, name, 'action')} = {step.action!r}"


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = session.exec(select(Campaign).where(col(Campaign.name) == name)).first()
    if campaign is None:
        raise NotFound(f"no campaign named {name!r} (see `dialer campaign list`)")
    return campaign


def create_campaign(session: Session, spec: CampaignSpec) -> Campaign:
    if session.exec(select(col(Campaign.id)).where(col(Campaign.name) == spec.name)).first() is not None:
        raise InvalidState(f"a campaign named {spec.name!r} exists already")
    campaign = Campaign(name=spec.name, provider=spec.provider, spec=spec.model_dump(mode="json"))
    session.add(campaign)
    session.flush()
    return campaign


def set_provider(session: Session, *, name: str, provider: str, settings: Settings | None = None) -> Campaign:
    """Switch a campaign to another provider (or account) between launches; its contacts are
    untouched. The new one is its first route (taken out of its fallback routes, if there), and a
    return to the first route that was due is dropped."""
    campaign = get_campaign(session, name)
    if campaign.status == CampaignStatus.RUNNING:
        raise InvalidState(f"campaign {name!r} is running: pause it before switching provider")
    old = spec_of(campaign)
    fallback = tuple(route for route in old.fallback if route != provider)
    spec = type(old).model_validate(
        old.model_dump(mode="json") | {"provider": provider, "fallback": fallback}
    )
    check_provider_can(spec, source=f"campaign {name!r}", settings=settings)
    target = get_provider(provider)
    if not target.capabilities.extensions:
        waiting = session.scalar(
            sa.select(sa.func.count())
            .select_from(Contact)
            .where(
                col(Contact.campaign_id) == campaign.id,
                col(Contact.extension) != "",
                col(Contact.state) != ContactState.DONE,
            )
        )
        if waiting:
            raise InvalidState(
                f"campaign {name!r}: {waiting} contact(s) still to call have an extension,"
                f" which {target.title} cannot dial"
            )
    campaign.spec = spec.model_dump(mode="json")
    campaign.provider = provider
    campaign.route_back_at = campaign.route_cause = None
    session.add(campaign)
    return campaign


UPDATABLE = ("message", "question", "retry", "window", "pacing", "call")
"""What ``campaign update`` may change: how contacts are called, not who or through which account."""


def update_campaign(session: Session, *, spec: CampaignSpec, settings: Settings | None = None) -> Campaign:
    """Give a paused (or not yet started) campaign a new message, question, retry policy, window,
    pacing or call options from its file; its contacts, provider and caller ID stay."""
    campaign = get_campaign(session, spec.name)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
        raise InvalidState(
            f"campaign {spec.name!r} is {campaign.status}: pause it before changing it"
            if campaign.status == CampaignStatus.RUNNING
            else f"campaign {spec.name!r} is {campaign.status}: it cannot change any more"
        )
    current = spec_of(campaign)
    fixed = [
        name
        for name in type(spec).model_fields
        if name not in UPDATABLE and getattr(spec, name) != getattr(current, name)
    ]
    if fixed:
        hint = " (`dialer campaign provider` switches the provider)" if "provider" in fixed else ""
        raise InvalidState(
            f"campaign {spec.name!r}: {', '.join(fixed)} cannot change once contacts are imported;"
            f" only {', '.join(UPDATABLE)} can{hint}"
        )
    check_provider_can(spec, source=f"campaign {spec.name!r}", settings=settings)
    campaign.spec = spec.model_dump(mode="json")
    session.add(campaign)
    return campaign


def delete_campaign(session: Session, *, name: str) -> int:
    """Remove a campaign that is not running, with its contacts, attempts, callbacks and answers;
    return how many contacts went with it."""
    campaign = get_campaign(session, name)
    if campaign.status == CampaignStatus.RUNNING:
        raise InvalidState(f"campaign {name!r} is running: pause or cancel it first")
    campaign_id = campaign.id
    attempts = sa.select(col(Attempt.id)).where(col(Attempt.campaign_id) == campaign_id)
    session.execute(sa.delete(WebhookEvent).where(col(WebhookEvent.attempt_id).in_(attempts)))
    session.execute(sa.delete(DtmfAnswer).where(col(DtmfAnswer.attempt_id).in_(attempts)))
    session.execute(sa.delete(Notification).where(col(Notification.campaign_id) == campaign_id))
    session.execute(sa.delete(Attempt).where(col(Attempt.campaign_id) == campaign_id))
    session.execute(sa.delete(DncEntry).where(col(DncEntry.campaign_id) == campaign_id))
    contacts = changed(session, sa.delete(Contact).where(col(Contact.campaign_id) == campaign_id))
    session.execute(sa.delete(ZoneGroup).where(col(ZoneGroup.campaign_id) == campaign_id))
    session.execute(sa.delete(Campaign).where(col(Campaign.id) == campaign_id))
    return contacts


MOVES = {
    "start": ({CampaignStatus.DRAFT, CampaignStatus.PAUSED}, CampaignStatus.RUNNING),
    "resume": ({CampaignStatus.PAUSED}, CampaignStatus.RUNNING),
    "pause": ({CampaignStatus.RUNNING}, CampaignStatus.PAUSED),
    "cancel": (
        {CampaignStatus.DRAFT, CampaignStatus.RUNNING, CampaignStatus.PAUSED},
        CampaignStatus.CANCELLED,
    ),
}


def change_status(session: Session, *, name: str, action: str, now: datetime) -> Campaign:
    """Start, pause, resume or cancel a campaign (a guarded update: concurrent commands are safe)."""
    allowed, target = MOVES[action]
    campaign = get_campaign(session, name)
    if campaign.status not in allowed:
        raise InvalidState(f"campaign {name!r} is {campaign.status}: cannot {action} it")
    if action == "start":
        has_contacts = session.exec(
            select(col(Contact.id)).where(col(Contact.campaign_id) == campaign.id).limit(1)
        ).first()
        if has_contacts is None:
            raise InvalidState(f"campaign {name!r} has no contacts: import a CSV first")
    values: dict[str, object] = {"status": target, "reason": None}
    if target == CampaignStatus.RUNNING and campaign.started_at is None:
        values["started_at"] = now
    if target == CampaignStatus.CANCELLED:
        values["finished_at"] = now
    guarded = sa.update(Campaign).where(
        col(Campaign.id) == campaign.id, col(Campaign.status) == campaign.status
    )
    if changed(session, guarded.values(values)) != 1:
        raise InvalidState(f"campaign {name!r} changed while this command ran: try again")
    if target in (CampaignStatus.PAUSED, CampaignStatus.CANCELLED):
        _withdraw_queued(session, campaign_id=campaign.id, now=now)
    if target == CampaignStatus.CANCELLED:
        ids = session.scalars(
            sa.update(Contact)
            .where(col(Contact.campaign_id) == campaign.id, col(Contact.state) == ContactState.PENDING)
            .values(state=ContactState.DONE, result=ContactResult.CANCELLED, updated_at=now)
            .returning(col(Contact.id))
        ).all()
        notify.contacts_finished(
            session,
            spec_of(campaign),
            campaign_id=campaign.id or 0,
            contact_ids=[i for i in ids if i],
            now=now,
        )
    session.refresh(campaign)
    return campaign


def route_around(
    session: Db,
    *,
    provider: str,
    reason: str,
    cause: str,
    now: datetime,
    back_after: timedelta | None = None,
    pause: bool = True,
    campaign_ids: Collection[int] | None = None,
) -> list[str]:
    """Move every running campaign off a provider account that cannot place calls (credentials
    refused, no balance, a run of failures: the ``cause``) to its next route, with the reason for
    the operator; only ``campaign_ids``, if given (what one `dialer run`, a simulated one above
    all, finds moves its own campaign). A campaign with no route left is paused (unless not
    ``pause``: a run of failures may pass). ``back_after``: the first route is tried again then.
    Queued attempts are taken back, to be placed on the new route; a call that may have reached
    the old one is settled there first (its contact is not called again while it lasts). Return
    the names of the campaigns moved or paused."""
    running = session.execute(
        sa.select(col(Campaign.id), col(Campaign.name), col(Campaign.spec), col(Campaign.runner)).where(
            col(Campaign.provider) == provider,
            col(Campaign.status) == CampaignStatus.RUNNING,
            sa.true() if campaign_ids is None else col(Campaign.id).in_(campaign_ids),
        )
    ).all()
    moved = []
    for campaign_id, name, raw, runner in running:
        routes = spec_from(raw).routes
        # A route another dialer dials is not taken: one process paces an account (see dialer.lease).
        later: list[str] = []
        busy: list[str] = []
        for route in routes[routes.index(provider) + 1 :] if provider in routes else ():
            held = holders(session, provider=route, now=now, other_than=runner or WORKERS)
            (busy if held else later).append(f"{route} (dialled by {held[0].name})" if held else route)
        if busy:
            reason = f"{reason}; not {', '.join(busy)}"
        if later:
            values: dict[str, Any] = {
                "provider": later[0],
                "reason": f"on {later[0]} since {now:%Y-%m-%d %H:%M} UTC, as {provider} failed: {reason}"[
                    :500
                ],
                "route_cause": cause,
            }
            if provider == routes[0]:  # only the first route is tried again, and only after failures
                values["route_back_at"] = now + back_after if back_after else None
            log.error("campaign %s moves from %s to %s: %s", name, provider, later[0], reason)
        elif pause:
            values = {"status": CampaignStatus.PAUSED, "reason": f"paused: {reason}"[:500]}
            log.error("campaign %s paused: %s", name, reason)
        else:
            continue
        if _switch(session, campaign_id=campaign_id, route=provider, values=values, now=now):
            moved.append(name)
    return moved


def route_back(session: Db, *, campaign: Campaign, now: datetime, retry: timedelta) -> None:
    """Try a campaign's first route again, its time come (``route_back_at``); while another
    dialer paces that account, ``retry`` later."""
    first = spec_of(campaign).routes[0]
    if held := holders(session, provider=first, now=now, other_than=campaign.runner or WORKERS):
        session.execute(_still_on(campaign.id, campaign.provider).values(route_back_at=now + retry))
        log.warning(
            "campaign %s stays on %s: %s dials %s", campaign.name, campaign.provider, held[0].name, first
        )
        return
    values = {
        "provider": first,
        "route_back_at": None,
        "route_cause": None,
        "reason": f"back on {first} since {now:%Y-%m-%d %H:%M} UTC, trying it again"
        f" ({campaign.provider} took over when it failed)",
    }
    if _switch(session, campaign_id=campaign.id, route=campaign.provider, values=values, now=now):
        log.warning("campaign %s tries %s again", campaign.name, first)


def _still_on(campaign_id: int | None, route: str) -> sa.Update:
    """An update of a campaign that is still running on ``route`` (nobody moved or paused it since)."""
    return sa.update(Campaign).where(
        col(Campaign.id) == campaign_id,
        col(Campaign.provider) == route,
        col(Campaign.status) == CampaignStatus.RUNNING,
    )


def _switch(
    session: Db, *, campaign_id: int | None, route: str, values: dict[str, Any], now: datetime
) -> bool:
    """Move (or pause) a campaign still running on ``route``, taking back its queued attempts."""
    if changed(session, _still_on(campaign_id, route).values(values)) != 1:
        return False
    _withdraw_queued(session, campaign_id=campaign_id, now=now)
    return True


def _withdraw_queued(session: Db, *, campaign_id: int | None, now: datetime) -> None:
    """Take back every queued attempt: their tasks will find nothing to place."""
    contact_ids = (
        session.execute(
            sa.delete(Attempt)
            .where(col(Attempt.campaign_id) == campaign_id, col(Attempt.status) == AttemptStatus.QUEUED)
            .returning(col(Attempt.contact_id))
        )
        .scalars()
        .all()
    )
    if contact_ids:
        session.execute(
            sa.update(Contact)
            .where(col(Contact.id).in_(contact_ids), col(Contact.state) == ContactState.CALLING)
            .values(state=ContactState.PENDING, attempts=col(Contact.attempts) - 1, updated_at=now)
        )


def wait_for_sends(url: str, *, campaign_id: int, timeout: float) -> int:
    """Wait until no request of the campaign is on its way to the provider; return how many remain."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(url) as session:
            sending = (
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Attempt)
                    .where(
                        col(Attempt.campaign_id) == campaign_id,
                        col(Attempt.status) == AttemptStatus.DISPATCHING,
                    )
                )
                or 0
            )
        if sending == 0 or time.monotonic() > deadline:
            return sending
        time.sleep(0.05)


@dataclass
class Progress:
    """A campaign's counts, for ``status`` and the quickstart's live view."""

    name: str
    status: str
    provider: str
    reason: str | None
    contacts: int = 0
    states: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    runner: str | None = None
    """Who runs it now (a live lease's holder), if anyone."""
    unattended_since: datetime | None = None
    """Running, but its runner stopped renewing its lease then (a killed run): nothing calls."""
    resume: str = ""
    """What carries an unattended campaign on, the way it was run."""
    waiting_for_window: int = 0
    """Contacts due to be called whose window is closed now (in a running campaign)."""
    window_opens: datetime | None = None
    """When the first of those windows opens."""
    starts_at: datetime | None = None
    """The campaign's ``schedule.start``, while it is still to come."""
    ends_at: datetime | None = None
    """The campaign's ``schedule.end``: its contacts not reached by then expire."""
    notify_url: str | None = None
    notifications: Counter[str] = field(default_factory=Counter)
    """Its results pushed to ``notify_url``, by where they stand (:func:`dialer.notify.standing`)."""
    notify_error: str | None = None
    """Why the latest result not delivered was not."""
    answers: dict[str, Counter[str]] = field(default_factory=dict)
    """Valid answers by question (the flow's step; ``question`` for ``[question]``), then by
    choice (its keys where it names none, ``recorded`` for a recording)."""

    @property
    def done(self) -> int:
        return self.states[ContactState.DONE]

    @property
    def live_calls(self) -> int:
        return sum(n for status, n in self.attempts.items() if AttemptStatus(status) in LIVE)


def progress(session: Session, name: str, *, window: Window | None = None) -> Progress:
    """A campaign's counts; contacts wait for ``window`` (None: the campaign's own)."""
    campaign = get_campaign(session, name)
    report = Progress(
        name=campaign.name, status=campaign.status, provider=campaign.provider, reason=campaign.reason
    )
    if lapsed(campaign, utcnow()):
        report.unattended_since = campaign.runner_seen or campaign.started_at
        run = f"`dialer run {campaign.name}{' --simulate' if campaign.simulated else ''}`"
        workers = "the deployment's workers and beat"
        if campaign.simulated:  # the workers leave a campaign only simulated (see dialer.scheduler)
            report.resume = run
        else:
            either = f"{run} here, or starting {workers},"
            report.resume = {WORKERS: f"starting {workers}", None: either}.get(campaign.runner, run)
    elif campaign.status == CampaignStatus.RUNNING:
        report.runner = campaign.runner
    for state, result, count in session.execute(
        sa.select(col(Contact.state), col(Contact.result), sa.func.count())
        .where(col(Contact.campaign_id) == campaign.id)
        .group_by(col(Contact.state), col(Contact.result))
    ):
        report.contacts += count
        report.states[state] += count
        if result:
            report.results[result] += count
    for status, count in session.execute(
        sa.select(col(Attempt.status), sa.func.count())
        .where(col(Attempt.campaign_id) == campaign.id)
        .group_by(col(Attempt.status))
    ):
        report.attempts[status] = count
    label = sa.func.coalesce(
        col(DtmfAnswer.choice), sa.func.nullif(col(DtmfAnswer.digits), ""), sa.literal("recorded")
    )
    for step, answer, count in session.execute(
        sa.select(col(DtmfAnswer.step), label, sa.func.count())
        .join(Contact, col(Contact.id) == col(DtmfAnswer.contact_id))
        .where(col(Contact.campaign_id) == campaign.id, col(DtmfAnswer.valid))
        .group_by(col(DtmfAnswer.step), label)
    ):
        report.answers.setdefault(step, Counter())[answer] = count
    spec = spec_of(campaign)
    now = utcnow()
    report.starts_at = spec.schedule.start if spec.schedule.before_start(now) else None
    report.ends_at = spec.schedule.end
    if spec.notify.url:
        report.notify_url = spec.notify.url
        report.notifications = notify.standing(session, campaign_id=campaign.id)
        report.notify_error = notify.last_error(session, campaign_id=campaign.id or 0)
    rank = {step: index for index, step in enumerate(spec.call_flow.questions())}
    report.answers = dict(sorted(report.answers.items(), key=lambda item: rank.get(item[0], len(rank))))
    if campaign.status == CampaignStatus.RUNNING:
        _waiting(session, report, campaign_id=campaign.id or 0, window=window or spec.window, now=now)
    return report


def _waiting(session: Session, report: Progress, *, campaign_id: int, window: Window, now: datetime) -> None:
    """How many pending contacts wait for their window, and when the first of them opens."""
    closed = {
        group_id: windows.next_open(window, group_zones(window, zones, own), now)
        for group_id, zones, own in session.execute(
            sa.select(col(ZoneGroup.id), col(ZoneGroup.zones), col(ZoneGroup.own)).where(
                col(ZoneGroup.campaign_id) == campaign_id
            )
        )
        if not windows.is_open(window, group_zones(window, zones, own), now)
    }
    if not closed:
        return
    counts = session.execute(
        sa.select(col(Contact.zone_group_id), sa.func.count())
        .where(
            col(Contact.campaign_id) == campaign_id,
            col(Contact.state) == ContactState.PENDING,
            col(Contact.zone_group_id).in_(closed),
        )
        .group_by(col(Contact.zone_group_id))
    ).all()
    report.waiting_for_window = sum(count for _, count in counts)
    if counts:
        report.window_opens = min(closed[group_id] for group_id, _ in counts if group_id is not None)
