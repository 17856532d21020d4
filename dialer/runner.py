"""``dialer run NAME``: one campaign in one process, against its provider or that provider's simulator.

The pump, the callers and the sweeper run here (:func:`dialer.embedded.run_until`, no broker), and
so does the receiver the provider calls back. Only this campaign is pumped and swept: another
campaign running in the same database is not this command's business.

Ctrl-C (or SIGTERM, which systemd and docker send) pauses the campaign: callers stop taking work,
the requests already on their way finish, the campaign is paused (queued attempts withdrawn), and
no call is placed after that. Calls in progress still report their ends to the receiver, so the
command stays until they have ended (a second signal leaves at once; the sweeper settles them on
the next run). Running the command again resumes the campaign where it stopped.

The run holds the campaign's lease (:mod:`dialer.lease`) while it runs: a second ``dialer run``
of it, or of another campaign of the same account, is refused, naming who holds it.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.live import Live
from rich.table import Table

from campaigns.outcomes import CampaignStatus
from campaigns.spec import Window
from dialer import db, lease
from dialer.embedded import DATABASE_ERRORS, BackgroundServer, Outage, run_until
from dialer.errors import ConfigurationError, DatabaseGone, InvalidState, LeaseLost
from dialer.models import utcnow
from dialer.operations import Progress, change_status, check_provider_can, get_campaign, progress
from dialer.providers import PROVIDERS, account_limit
from dialer.receiver import create_app as receiver_app
from dialer.runtime import spec_of
from dialer.serving import uvicorn_options
from dialer.settings import Settings
from dialer.simulators import dev_credentials, simulator_app, simulator_urls
from dialer.simulators.base import Script

SIMULATED_TIMINGS: dict[str, float] = {
    "tick_seconds": 0.25,
    "sweep_seconds": 2,
    "requeue_after": 10,
    "settle_after": 20,
    "give_up_after": 60,
}
"""Against a simulator whose calls take a tenth of their time, the sweeper's waits shrink too."""
TIME_SCALE = 0.1


def private_host(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine or its own network."""
    if host in ("localhost", "") or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "." not in host  # a bare name (a container's, a LAN host's) resolves only nearby
    return address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified


def unreachable(public_url: str, provider_url: str) -> bool:
    """True when a provider at ``provider_url`` cannot call back ``public_url``: the callbacks' URL
    is on this machine or a private network, and the provider is not (a simulator here can)."""
    return private_host(urlsplit(public_url).hostname or "") and not private_host(
        urlsplit(provider_url).hostname or ""
    )


@dataclass
class Interrupts:
    """Ctrl-C as the run sees it: the first stops calling, the second stops waiting, a third is
    Python's own KeyboardInterrupt."""

    stop: threading.Event = field(default_factory=threading.Event)
    leave: threading.Event = field(default_factory=threading.Event)

    def __call__(self, *_: Any) -> None:
        if self.leave.is_set():
            raise KeyboardInterrupt
        (self.leave if self.stop.is_set() else self.stop).set()

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Take SIGINT and SIGTERM while the block runs (only the main thread can; elsewhere, set
        the events)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.signal(number, self) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port} for callbacks: {error.strerror}") from None
    return sock


OFFLINE_URL = "http://127.0.0.1:9"
"""Where a simulated run's other routes point: nothing listens there (port 9 is discard's)."""


def simulated(settings: Settings, route: str, *, simulator_url: str, public_url: str) -> Settings:
    """``settings`` with throwaway credentials for ``route``, pointed at its simulator. Every other
    route (other providers and accounts) points nowhere: a simulated campaign that moves to its
    next route places no real call there."""
    provider, _, name = route.partition(".")
    offline = {}  # every provider's accounts by the same names, each with nothing to call
    for other in PROVIDERS:
        kind = type(getattr(settings, other))
        names = settings.provider_settings(other).accounts
        offline[other] = kind(base_url=OFFLINE_URL, accounts={n: kind(base_url=OFFLINE_URL) for n in names})
    account = settings.provider_settings(route)
    values = {
        **account.model_dump(),
        **dev_credentials()[provider],
        **simulator_urls(provider, simulator_url),
        "accounts": {} if name else offline[provider].accounts,  # a provider's own keeps the others
    }
    simulating = type(account).model_validate(values)
    if name:
        accounts = offline[provider].accounts | {name: simulating}
        simulating = offline[provider].model_copy(update={"accounts": accounts})
    return settings.model_copy(
        update={**offline, provider: simulating, "public_url": public_url, **SIMULATED_TIMINGS}
    )


def run_campaign(
    name: str,
    *,
    settings: Settings,
    console: Console,
    render: Callable[[Progress], Table],
    simulate: bool = False,
    time_scale: float = TIME_SCALE,
    host: str = "127.0.0.1",
    port: int = 8000,
    interrupts: Interrupts | None = None,
    scripts: Mapping[str, Script] | None = None,
    confirm: Callable[[str], bool] = lambda question: True,
    again: str | None = None,
    ignore_window: bool = False,
) -> Progress:
    """Run campaign ``name`` here until it completes or Ctrl-C pauses it; return its progress.

    ``confirm`` is asked before the first real call of a campaign only simulated so far; ``again``
    is the command that resumes the run, as the operator gave it. ``ignore_window`` (a simulation
    only) places calls whatever the campaign's window says.

    ``simulate`` runs the provider's simulator on a loopback port with throwaway credentials (its
    callees behave as its table says, or as ``scripts`` say for their numbers), and the receiver
    on another; otherwise the receiver listens on ``host:port``, where
    ``DIALER_PUBLIC_URL`` must lead from the provider.
    """
    if ignore_window and not simulate:
        raise ConfigurationError(
            "--ignore-window is for a simulation only: real calls keep the campaign's window"
        )
    with db.session_scope(settings.database_url) as session:
        campaign = get_campaign(session, name)
        provider, campaign_id, spec = campaign.provider, campaign.id or 0, spec_of(campaign)
        simulated_only = campaign.simulated
    with ExitStack() as stack:
        receiver_socket = stack.enter_context(
            listening_socket("127.0.0.1", 0) if simulate else listening_socket(host, port)
        )
        if simulate:
            sim_socket = stack.enter_context(listening_socket("127.0.0.1", 0))
            simulator_url = f"http://127.0.0.1:{sim_socket.getsockname()[1]}"
            public_url = f"http://127.0.0.1:{receiver_socket.getsockname()[1]}"
            settings = simulated(settings, provider, simulator_url=simulator_url, public_url=public_url)
        check_provider_can(spec, source=f"campaign {name!r}", settings=settings)
        base_url = settings.provider_settings(provider).base_url
        if not simulate and unreachable(settings.public_url, base_url):
            raise ConfigurationError(
                f"DIALER_PUBLIC_URL is {settings.public_url}, which {provider} at {base_url} cannot reach,"
                " so no call's outcome would arrive: set it to the public address that leads to"
                f" {host}:{port} here (a reverse proxy or a tunnel), or run with --simulate"
            )
        if (
            not simulate
            and simulated_only
            and not confirm(
                f"campaign {name} has only been simulated so far: place real calls through {provider}?"
            )
        ):
            raise InvalidState(f"campaign {name!r}: not started (it stays as it was)")
        # Ctrl-C and SIGTERM are taken from before the campaign is marked running: a signal in
        # between pauses it as one later would, instead of leaving it running with nobody behind it.
        caught = stack.enter_context((interrupts or Interrupts()).installed())
        holder = lease.this_process()
        with db.session_scope(settings.database_url) as session:
            lease.take(session, campaign=get_campaign(session, name), holder=holder, now=utcnow())
        stack.callback(_release, settings.database_url, campaign_id, holder)
        _start_or_resume(settings.database_url, name, simulate=simulate)
        if simulate:
            # The simulated account allows what the operator's is configured for (else the documented limit).
            limit = account_limit(provider, settings.provider_settings(provider))
            app = simulator_app(provider, settings, rate_limit=limit, time_scale=time_scale)
            app.state.simulation.scripts.update(scripts or {})
            stack.enter_context(BackgroundServer(app, sock=sim_socket))
            console.print(
                f"simulating {provider} on {simulator_url}; calls take {time_scale:g} of their time"
                + ("; the calling window is ignored" if ignore_window else "")
            )
        stack.enter_context(
            BackgroundServer(receiver_app(settings), sock=receiver_socket, options=uvicorn_options(settings))
        )
        console.print(f"running {name} through {provider}: Ctrl-C pauses")
        resume = again or f"dialer run {name}{' --simulate' if simulate else ''}"
        try:
            final = _run(
                settings,
                name,
                campaign_id,
                caught,
                console=console,
                render=render,
                holder=holder,
                simulated=simulate,
                any_time=ignore_window,
            )
        except DatabaseGone as error:
            raise DatabaseGone(
                f"{error}. No call has been placed since it stopped answering; the campaign stays"
                f" marked running, and `{resume}` resumes it once the database is back"
            ) from None
        except LeaseLost as error:
            raise LeaseLost(
                f"campaign {name!r}: this run stopped: its lease went {lease.LEASE_SECONDS:g} s unrenewed"
                f" (the process was stopped or starved) and {error}. It placed no call once its lease ran"
                " short; the campaign is left as it is"
            ) from None
    left = final.notifications["waiting"] + final.notifications["failing"]
    if final.notify_url and left:
        why = f" (last error: {final.notify_error})" if final.notify_error else ""
        console.print(
            f"{left:,} result(s) not yet delivered to {final.notify_url}{why}: `dialer notify send {name}`"
            " delivers them (a later run or the workers do too)",
            markup=False,
        )
    if final.status == CampaignStatus.PAUSED:
        console.print(f"\ncampaign {name} is paused: `{resume}` resumes it", markup=False)
    else:
        console.print(f"\ncampaign {name} is {final.status}")
    return final


def _release(url: str, campaign_id: int, holder: str) -> None:
    try:
        with db.session_scope(url) as session:
            lease.release(session, campaign_id=campaign_id, holder=holder)
    except DATABASE_ERRORS:
        pass  # a database gone cannot be told: the lease lapses on its own


def _start_or_resume(url: str, name: str, *, simulate: bool) -> None:
    with db.session_scope(url) as session:
        campaign = get_campaign(session, name)
        campaign.simulated = simulate and (campaign.simulated or campaign.started_at is None)
        if campaign.status == CampaignStatus.RUNNING:
            return  # a run stopped without its pause (killed): carry on where it was
        if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
            raise InvalidState(
                f"campaign {name!r} is {campaign.status}: nothing left to call"
                f" (`dialer export {name} --out results.csv` writes its results)"
            )
        action = "start" if campaign.status == CampaignStatus.DRAFT else "resume"
        change_status(session, name=name, action=action, now=utcnow())


def _run(
    settings: Settings,
    name: str,
    campaign_id: int,
    interrupts: Interrupts,
    *,
    console: Console,
    render: Callable[[Progress], Table],
    holder: str,
    simulated: bool,
    any_time: bool,
) -> Progress:
    outage = Outage(settings.db_outage_limit)

    def read() -> Progress:  # the lease is kept by run_until
        with db.session_scope(settings.database_url) as session:
            return progress(session, name, window=Window.always() if any_time else None)

    def pause() -> None:
        with db.session_scope(settings.database_url) as session:
            lease.keep(session, campaign_id=campaign_id, holder=holder, now=utcnow())  # ours to pause
            if get_campaign(session, name).status == CampaignStatus.RUNNING:
                change_status(session, name=name, action="pause", now=utcnow())

    only = frozenset({campaign_id})
    state = {"report": outage.retrying(read)}
    with Live(render(state["report"]), console=console, auto_refresh=False, transient=False) as live:

        def tick() -> None:
            state["report"] = read()
            live.update(render(state["report"]), refresh=True)

        def calling() -> bool:
            return not interrupts.stop.is_set() and state["report"].status == CampaignStatus.RUNNING

        run_until(
            settings,
            lambda: not calling(),
            on_tick=tick,
            only=only,
            simulated=simulated,
            any_time=any_time,
            holder=holder,
        )
        if interrupts.stop.is_set():
            # The callers have stopped and their last requests are answered: from here on the
            # campaign is paused and its queued attempts withdrawn, so nothing more is placed.
            outage.retrying(pause)
            outage.retrying(tick)
            if state["report"].live_calls:
                console.print(
                    f"paused; waiting for {state['report'].live_calls} call(s) in progress to end so"
                    " their outcomes are recorded (Ctrl-C again to leave now)"
                )
            run_until(
                settings,
                lambda: interrupts.leave.is_set() or not state["report"].live_calls,
                on_tick=tick,
                only=only,
                simulated=simulated,
                any_time=any_time,
                holder=holder,
            )
    return outage.retrying(read)
