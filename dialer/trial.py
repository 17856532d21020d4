"""Trying a campaign's call before the campaign: in the terminal, or as one call to your own number.

``dialer campaign try NAME`` walks the flow as a call would, with no call placed: it prints what the
callee hears at each step, with one contact's columns filled in, and takes the keys typed at each
question. ``dialer campaign call NAME --to NUMBER`` places one call of the campaign to the operator's
own number (``--simulate``: through the provider's simulator, whose callee presses ``--keys``) and
prints what the call recorded. Both walk the flow with :func:`campaigns.flow.judge`, as the receiver
does, so what they show is what a call does.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from campaigns.flow import Answer, Flow, Segment, Step, judge, start
from campaigns.spec import CampaignSpec, Window
from dialer.errors import InvalidState
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer
from dialer.operations import create_campaign, delete_campaign, get_campaign
from dialer.runtime import spec_of


class _Shown(dict[str, str]):
    """A contact's columns, a missing one shown as its placeholder."""

    def __missing__(self, name: str) -> str:
        return "{" + name + "}"


def sample_contact(session: Session, campaign: Campaign, phone: str | None) -> tuple[str, dict[str, str]]:
    """The contact a trial fills the steps' placeholders from: ``phone``'s, else the first imported
    (placeholders stay as they are when the campaign has none)."""
    query = select(Contact).where(col(Contact.campaign_id) == campaign.id)
    if phone is not None:
        query = query.where(col(Contact.phone) == phone)
    contact = session.exec(query.order_by(col(Contact.id)).limit(1)).first()
    if contact is None and phone is not None:
        raise InvalidState(f"campaign {campaign.name!r} has no contact {phone}")
    return (contact.phone, dict(contact.variables)) if contact else ("+10000000000", {})


@dataclass
class Walk:
    """What a walk through the flow heard and kept."""

    lines: list[str] = field(default_factory=list)
    answers: list[tuple[str, Answer]] = field(default_factory=list)


def _said(flow: Flow, step: Step, variables: Mapping[str, str]) -> str | None:
    if step.audio is not None:
        return f"(plays {step.audio})"
    if step.say is None:
        return None
    return string.Formatter().vformat(step.say, (), _Shown(variables))


def _actions(step: Step, phone: str, variables: Mapping[str, str], campaign: str) -> Iterator[str]:
    if step.action == "optout":
        where = "every campaign's" if step.scope == "global" else f"{campaign}'s"
        yield f"[{phone} goes on {where} do-not-call list; the call ends]"
    elif step.action == "transfer":
        number = step.to or variables.get(step.to_column or "", f"{{{step.to_column}}}")
        yield f"[the callee is connected to {number}, ringing up to {step.ring_timeout.total_seconds():g} s]"
    elif step.action == "record":
        yield (
            f"[a tone; the callee's voice is recorded, up to {step.max_duration.total_seconds():g} s,"
            f" until {step.end_key} or silence]"
        )


def walk(
    spec: CampaignSpec,
    phone: str,
    variables: Mapping[str, str],
    keys: Callable[[str, Step, int], str | None],
    *,
    show: Callable[[str], None] = lambda line: None,
) -> Walk:
    """Walk ``spec``'s flow as a call to ``phone`` would: ``keys(step, its step, try)`` gives what
    the callee presses at each question ("" for silence, None to hang up); ``show`` is told each
    line the callee hears or the dialer does."""
    flow, walked = spec.call_flow, Walk()

    def tell(line: str) -> None:
        walked.lines.append(line)
        show(line)

    segment: Segment | None = start(flow)
    while segment is not None:
        if segment.preface is not None:
            tell(f"  {string.Formatter().vformat(segment.preface, (), _Shown(variables))}")
        for name, step in segment.steps:
            if (text := _said(flow, step, variables)) is not None:
                tell(f"{name}: {text}")
            for line in _actions(step, phone, variables, spec.name):
                tell(f"  {line}")
        question = segment.question
        if question is None:
            tell("[the call ends]")
            break
        name, step = question
        pressed = keys(name, step, segment.tries)
        if pressed is None:
            tell("[the callee hangs up]")
            break
        turn = judge(flow, name, pressed, tries=segment.tries)
        if turn.answer is not None:
            walked.answers.append((name, turn.answer))
            kept = turn.answer.choice or turn.answer.digits or "nothing"
            tell(f"  [answer kept: {name} = {kept}{'' if turn.answer.valid else ' (not valid)'}]")
        segment = turn.then
    else:
        tell("[the call ends]")
    return walked


# -- one call to the operator's own number ---------------------------------------------------------


def test_campaign(session: Session, *, name: str, to: str, variables: Mapping[str, str]) -> Campaign:
    """A campaign of its own for one test call of ``name``: the same call, to ``to`` only, now
    (no calling window, no retry), its opt-outs kept to itself. It holds one contact."""
    spec = spec_of(get_campaign(session, name))
    flow = spec.call_flow.model_dump(mode="json")
    for step in flow["steps"].values():
        if step["action"] == "optout":
            step["scope"] = "campaign"
    trial = CampaignSpec.model_validate(
        spec.model_dump(mode="json")
        | {
            "name": f"{name}.test-{uuid.uuid4().hex[:8]}",
            "flow": flow,
            "message": None,
            "question": None,
            "window": Window.always().model_dump(mode="json"),
            "retry": {"max_attempts": 1},
        }
    )
    campaign = create_campaign(session, trial)
    session.add(Contact(campaign_id=campaign.id or 0, phone=to, variables=dict(variables), row_number=2))
    session.flush()
    return campaign


def test_call_summary(session: Session, campaign: Campaign) -> list[str]:
    """What the test call recorded, as lines for the operator; the test campaign is then deleted."""
    attempt = session.exec(select(Attempt).where(col(Attempt.campaign_id) == campaign.id)).first()
    lines = []
    if attempt is None:
        lines.append("no call was placed")
    else:
        outcome = attempt.status + (f" ({attempt.reason})" if attempt.reason else "")
        lines.append(f"call {attempt.provider_call_id or '-'}: {outcome}, {attempt.duration or 0} s")
        answers = session.exec(
            select(DtmfAnswer).where(col(DtmfAnswer.attempt_id) == attempt.id).order_by(col(DtmfAnswer.id))
        ).all()
        for answer in answers:
            kept = answer.choice or answer.recording or answer.digits or "nothing"
            lines.append(f"  {answer.step} = {kept}{'' if answer.valid else ' (not valid)'}")
        if attempt.opted_out:
            lines.append("  opted out (kept to the test call: your number is not on the list)")
        if attempt.transfer_to:
            lines.append(f"  transferred to {attempt.transfer_to}: {attempt.transfer_status or 'no news'}")
    delete_campaign(session, name=campaign.name)
    return lines
