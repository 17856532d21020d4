"""The webhook receiver under load, beside the frameworks' floor measured in the same run.

    python bench/webhooks.py [--seconds 10] [--connections 32 64] [--rate 1000]
                             [--databases postgresql sqlite] [--serve-workers 1 2]

Callbacks as providers send them, for calls in progress: every provider's sequence (Vonage signed,
started, ringing, answered, input, completed; CM.com's one callback; Routee's statuses and
collected tones; Cequens's statuses and its DTMF GET; Fractel's BEGIN and END with Basic
credentials), 10% of them sent twice and 5% of the calls with two events swapped. Sent over
keep-alive connections by a lean asyncio client, to:

1. the floor: Starlette on uvicorn reading each body (JSON parsed) and answering 204
   (bench/bare_receiver.py), the same uvicorn settings as ``dialer serve``;
2. the same floor keeping each body: one INSERT per callback into a table of its own, committed
   before the 204 through the receiver's group writer, on a fresh database of each kind; what
   any receiver that keeps what it answers pays, less the recording's own work;
3. ``dialer serve`` on a fresh PostgreSQL database (and SQLite), every write committed before
   its 2xx.

For each: requests/s at saturation (closed loop, ``--connections``) and at a fixed offered load
(open loop, ``--rate``; latency counted from when each request was due), p50 and p99 latency,
non-2xx answers, lost events (distinct events answered 2xx, less those in the database), and the
receiver's CPU time per callback; for ``dialer serve``, its ratio to the floor and its share of
the durable floor (2.) on the same database. Goals (issue "A call's whole life, fast"): ratio to
the floor >= 0.4, p99 < 100 ms at 1,000 requests/s offered, nothing lost; SQLite p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cpu_seconds, machine, postgres_database
from campaigns.spec import parse_campaign
from dialer import db
from dialer.embedded import loopback_socket
from dialer.settings import environment
from dialer.simulators import dev_credentials
from dialer.simulators.vonage import sign_webhook
from tests.e2e import campaign_text

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = ("vonage", "cm", "routee", "cequens", "fractel")


@dataclass(frozen=True)
class Callback:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    key: str
    """Which event this is (a duplicate has its original's key)."""

    def wire(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (self.body if self.method == "POST" else b"")


def _events(
    provider: str, token: str, call_id: str, credentials: dict[str, dict[str, str]]
) -> list[Callback]:
    """One call's callbacks, as its provider sends them."""
    base = f"/webhooks/{provider}/{token}"

    def post(kind: str, payload: dict[str, object], headers: tuple[tuple[str, str], ...] = ()) -> Callback:
        body = json.dumps(payload).encode()
        return Callback("POST", f"{base}/{kind}", headers, body, f"{token}:{kind}:{len(body)}:{hash(body)}")

    if provider == "vonage":
        secret, api_key = credentials["vonage"]["signature_secret"], credentials["vonage"]["api_key"]
        common = {
            "uuid": call_id,
            "conversation_uuid": f"CON-{call_id}",
            "from": "14155550100",
            "to": "12125550106",
        }

        def signed(kind: str, payload: dict[str, object]) -> Callback:
            body = json.dumps(payload).encode()
            jwt = sign_webhook(body, secret=secret, api_key=api_key)
            return Callback(
                "POST",
                f"{base}/{kind}",
                (("Authorization", f"Bearer {jwt}"),),
                body,
                f"{token}:{kind}:{hash(body)}",
            )

        return [
            signed("event", common | {"status": "started"}),
            signed("event", common | {"status": "ringing"}),
            signed("event", common | {"status": "answered"}),
            signed("input", common | {"dtmf": {"digits": "1", "timed_out": False}}),
            signed("event", common | {"status": "completed", "duration": "21", "price": "0.00420000"}),
        ]
    if provider == "cm":
        return [
            post(
                "callback",
                {
                    "type": "dtmf-finished",
                    "call-id": call_id,
                    "result": {"code": 10, "description": "finished", "sip-disconnect-code": "BYE"},
                    "digits": "1",
                    "answered-on": "2026-11-27T10:00:05+00:00",
                    "ended-on": "2026-11-27T10:00:26+00:00",
                },
            )
        ]
    if provider == "routee":
        common = {"messageId": f"m-{call_id}", "conversationTrackingId": call_id, "to": "+12125550106"}
        statuses = ["Initiated", "Ringing", "InProgress"]
        return [
            *(
                post("status", common | {"status": {"name": name, "updatedDate": "2026-11-27T10:00:00Z"}})
                for name in statuses
            ),
            post("collect", common | {"collectedTones": "1"}),
            post("status", common | {"status": {"name": "Completed"}, "duration": 21, "price": 0.0052}),
        ]
    if provider == "cequens":
        statuses = [
            post("status", {"callId": call_id, "status": name})
            for name in ("initiated", "ringing", "answered")
        ]
        query = urlencode({"callId": call_id, "digits": "1"})
        dtmf = Callback("GET", f"{base}/dtmf?{query}", (), b"", f"{token}:dtmf")
        return [*statuses, dtmf, post("status", {"callId": call_id, "status": "completed", "duration": 21})]
    pair = f"dialer:{credentials['fractel']['webhook_password']}"
    basic = (("Authorization", "Basic " + base64.b64encode(pair.encode()).decode()),)
    common = {
        "uid": call_id,
        "account_code": "dialer",
        "from": "4155550100",
        "to": "12125550106",
        "direction": "OUTBOUND",
        "type": "VOICE",
    }
    return [
        post("event", common | {"status": "BEGIN"}, basic),
        post("event", common | {"status": "END", "disposition": "ANSWERED", "billable_seconds": 21}, basic),
    ]


def _calls(url: str, calls: int) -> dict[str, list[tuple[str, str]]]:
    """``calls`` calls in progress per provider, in the database: (token, call id) of each."""
    db.upgrade(url)
    engine = db.get_engine(url)
    made: dict[str, list[tuple[str, str]]] = {}
    moment = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        for index, provider in enumerate(PROVIDERS):
            spec = parse_campaign(
                campaign_text(provider).replace('name = "e2e"', f'name = "bench-{provider}"')
            )
            campaign_id = connection.execute(
                sa.text(
                    "INSERT INTO campaign (name, provider, spec, status, created_at) "
                    "VALUES (:name, :provider, :spec, 'running', :now) RETURNING id"
                ),
                {"name": spec.name, "provider": provider, "spec": spec.model_dump_json(), "now": moment},
            ).scalar_one()
            connection.execute(
                sa.text(
                    "INSERT INTO contact (campaign_id, phone, variables, row_number, state, attempts,"
                    " next_attempt_at, updated_at)"
                    " VALUES (:campaign, :phone, '{}', :row, 'calling', 1, :now, :now)"
                ),
                [
                    {"campaign": campaign_id, "phone": f"+1{index + 2}00{n:07d}", "row": n + 2, "now": moment}
                    for n in range(calls)
                ],
            )
            contacts = (
                connection.execute(
                    sa.text("SELECT id FROM contact WHERE campaign_id = :campaign ORDER BY id"),
                    {"campaign": campaign_id},
                )
                .scalars()
                .all()
            )
            pairs = [(secrets.token_urlsafe(24), f"{provider}-{secrets.token_hex(8)}") for _ in contacts]
            connection.execute(
                sa.text(
                    "INSERT INTO attempt (campaign_id, contact_id, number, provider, status, callback_token,"
                    " provider_call_id, send_failures, queued_at, dispatched_at, updated_at)"
                    " VALUES (:campaign, :contact, 1, :provider, 'dialing', :token, :call, 0,"
                    " :now, :now, :now)"
                ),
                [
                    {
                        "campaign": campaign_id,
                        "contact": contact,
                        "provider": provider,
                        "token": token,
                        "call": call,
                        "now": moment,
                    }
                    for contact, (token, call) in zip(contacts, pairs, strict=True)
                ],
            )
            made[provider] = pairs
    return made


def build(
    calls: dict[str, list[tuple[str, str]]], credentials: dict[str, dict[str, str]], seed: int = 7
) -> list[Callback]:
    """Every call's callbacks, calls interleaved as they would run side by side; 10% sent twice
    (the copy later), 5% of calls with two events swapped."""
    rng = random.Random(seed)
    sequences = []
    for provider, pairs in calls.items():
        for token, call_id in pairs:
            events = _events(provider, token if provider != "fractel" else "account", call_id, credentials)
            if len(events) > 2 and rng.random() < 0.05:
                at = rng.randrange(len(events) - 1)
                events[at], events[at + 1] = events[at + 1], events[at]
            sequences.append(events)
    rng.shuffle(sequences)
    ordered = [event for round_ in itertools.zip_longest(*sequences) for event in round_ if event is not None]
    out: list[Callback] = []
    for event in ordered:
        out.append(event)
        if rng.random() < 0.10:
            out.append(event)  # a redelivery, right behind
    return out


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return len(self.statuses)


async def _drive(
    port: int, callbacks: list[Callback], *, connections: int, seconds: float, rate: float | None
) -> Load:
    """Send ``callbacks`` in order over ``connections`` keep-alive connections for ``seconds``;
    closed loop, or open loop at ``rate`` requests a second (latency from when each was due)."""
    load = Load()
    host = f"127.0.0.1:{port}"
    wires = [callback.wire(host) for callback in callbacks]
    counter = itertools.count()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                index = next(counter)
                if index >= len(wires):
                    return
                due = started + index / rate if rate else time.perf_counter()
                if due > deadline or time.perf_counter() > deadline:
                    return
                if rate and (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                sent = due if rate else time.perf_counter()
                writer.write(wires[index])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                load.latencies.append(time.perf_counter() - sent)
                load.statuses.append(status)
                if 200 <= status < 300:
                    load.answered.add(callbacks[index].key)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    load.seconds = time.perf_counter() - started
    return load


@contextmanager
def _server(command: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    # Another checkout's server (``--compare``) runs from its own directory: ``python -m`` puts the
    # working directory ahead of PYTHONPATH, so from here it would import this checkout's code.
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=env.get("PYTHONPATH"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with loopback_probe(port):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{' '.join(command)} did not start") from None
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def loopback_probe(port: int) -> Iterator[None]:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        yield


def _free_port() -> int:
    with loopback_socket() as sock:
        return int(sock.getsockname()[1])


def _recorded(url: str) -> int:
    with db.get_engine(url).connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM webhookevent")).scalar_one())


def _line(label: str, load: Load, cpu: float | None, extra: str = "") -> str:
    ms = np.array(load.latencies) * 1000 if load.latencies else np.array([0.0])
    non_2xx = sum(1 for status in load.statuses if not 200 <= status < 300)
    per = f"  cpu {cpu / max(1, load.done) * 1000:.2f} ms/callback" if cpu is not None else ""
    return (
        f"{label:<48} {load.done / load.seconds:8.0f} req/s  p50 {np.percentile(ms, 50):7.1f} ms  "
        f"p99 {np.percentile(ms, 99):7.1f} ms  non-2xx {non_2xx}{per}{extra}"
    )


def measure(
    label: str,
    command: list[str],
    port: int,
    env: dict[str, str],
    callbacks: list[Callback],
    *,
    connections: int,
    seconds: float,
    rate: float | None,
    database: str | None,
) -> tuple[str, float]:
    with _server(command, port, env) as process:
        before = cpu_seconds(process.pid)
        load = asyncio.run(_drive(port, callbacks, connections=connections, seconds=seconds, rate=rate))
        cpu = cpu_seconds(process.pid) - before
    extra = ""
    if database is not None:
        lost = len(load.answered) - _recorded(database)
        extra = f"  lost {lost}"
    return _line(label, load, cpu, extra), load.done / load.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--calls", type=int, default=1500, help="calls in progress per provider")
    parser.add_argument("--databases", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument(
        "--serve-workers", type=int, nargs="+", default=[1, 2], help="`dialer serve --workers` to measure"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="another checkout (a git worktree) whose `dialer serve` is measured too, in the same run",
    )
    args = parser.parse_args()
    print(machine())
    credentials = dev_credentials()
    env = environment(credentials)
    port = _free_port()
    serve = [sys.executable, "-m", "dialer", "serve", "--port", str(port)]
    bare = [sys.executable, str(ROOT / "bench" / "bare_receiver.py"), str(port)]
    floors: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        with _database("sqlite", scratch) as url:
            sample = build(_calls(url, args.calls), credentials)

        def floor(
            label: str, command: list[str], *, connections: int, rate: float | None = None
        ) -> tuple[str, float]:
            """``measure`` against a bare app: it reads the callbacks, and needs no calls in progress."""
            return measure(
                label,
                command,
                port,
                {},
                sample,
                connections=connections,
                seconds=args.seconds,
                rate=rate,
                database=None,
            )

        for connections in args.connections:
            line, floors[connections] = floor(
                f"floor (bare Starlette) x{connections}", bare, connections=connections
            )
            print(line)
        print(floor(f"floor at {args.rate:g} req/s offered", bare, connections=64, rate=args.rate)[0])
        trees: list[tuple[str, list[str], dict[str, str]]] = [
            (f"dialer serve --workers {n}", [*serve, "--workers", str(n)], {}) for n in args.serve_workers
        ]
        if args.compare is not None:
            tree = {"PYTHONPATH": str(args.compare.resolve())}
            trees.append((f"{args.compare.name} serve", serve, tree))

        def on_fresh_database(
            name: str, label: str, command: list[str], tree: dict[str, str], **load: Any
        ) -> tuple[str, float]:
            """``measure`` against ``dialer serve`` on a fresh database ``name`` with calls in progress."""
            with _database(name, scratch) as url:
                callbacks = build(_calls(url, args.calls), credentials)
                environment = env | tree | {"DIALER_DATABASE_URL": url}
                return measure(
                    label, command, port, environment, callbacks, seconds=args.seconds, database=url, **load
                )

        for name in args.databases:
            for connections in args.connections:
                with _database(name, scratch) as url:
                    durable = f"floor + one durable insert, {name} x{connections}"
                    line, kept = floor(durable, [*bare, url], connections=connections)
                print(f"{line}  ratio {kept / floors[connections]:.3f}")
                for label, command, tree in trees:
                    line, rate = on_fresh_database(
                        name,
                        f"{label}, {name} x{connections}",
                        command,
                        tree,
                        connections=connections,
                        rate=None,
                    )
                    shares = (
                        f"ratio {rate / floors[connections]:.3f} ({rate / kept:.3f} of the durable floor)"
                    )
                    print(f"{line}  {shares}")
            for label, command, tree in trees:
                line, _ = on_fresh_database(
                    name,
                    f"{label}, {name} at {args.rate:g} req/s",
                    command,
                    tree,
                    connections=64,
                    rate=args.rate,
                )
                print(line)


@contextmanager
def _database(name: str, scratch: str) -> Iterator[str]:
    if name == "postgresql":
        with postgres_database() as url:
            try:
                yield url
            finally:
                db.get_engine(url).dispose()
        return
    path = Path(scratch) / f"webhooks-{secrets.token_hex(4)}.db"
    url = f"sqlite:///{path}"
    try:
        yield url
    finally:
        db.get_engine(url).dispose()


if __name__ == "__main__":
    main()
