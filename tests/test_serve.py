"""`dialer serve` under abuse, over real sockets: huge heads, slow heads, idle connections, a low
open-file limit. Real callbacks are answered all the while."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx

from dialer.embedded import loopback_socket
from dialer.models import Attempt
from tests.dialer.factories import campaign_with_contacts, queued_attempts

EVENT = {"status": "ringing", "from": "14155550100", "to": "12125550106"}


@contextmanager
def serving(url: str, tmp_path: Path, **env: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`dialer serve` on a free loopback port, its open-file limit at 256 (as some systems start
    processes), with ``env`` added to its settings."""
    with loopback_socket() as free:
        port = free.getsockname()[1]

    def low_limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dialer", "serve", "--port", str(port)],
        env={**os.environ, "DIALER_DATABASE_URL": url, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=low_limit,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "serve.log"
                ).read_text()
                time.sleep(0.1)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _attempts(url: str, count: int) -> list[Attempt]:
    phones = [f"+1212555{n:04d}" for n in range(count)]
    return queued_attempts(url, campaign_with_contacts(url, phones), count)


def _callbacks(port: int, attempts: list[Attempt]) -> list[int]:
    """One real callback per attempt, each on a connection of its own; their status codes."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        return [
            client.post(
                f"/webhooks/vonage/{attempt.callback_token}/event", json=EVENT | {"uuid": f"c-{attempt.id}"}
            ).status_code
            for attempt in attempts
        ]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_huge_head_gets_431_before_it_is_read_and_a_callback_is_answered_meanwhile(
    sqlite_url: str, tmp_path: Path
) -> None:
    attempts = _attempts(sqlite_url, 2)
    with (
        serving(sqlite_url, tmp_path) as (port, process),
        socket.create_connection(("127.0.0.1", port)) as huge,
    ):
        before = _rss_kib(process.pid)
        huge.sendall(b"POST /webhooks/vonage/x/event HTTP/1.1\r\nHost: a\r\nX-Big: ")
        sent, refused = 0, b""
        huge.settimeout(5)
        try:
            while sent < 64 * 1024 * 1024 and not refused:  # a 64 MB header, as an attacker sent
                huge.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        refused = huge.recv(200)
        assert _callbacks(port, attempts[:1]) == [204]
        after = _rss_kib(process.pid)
    assert refused.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert sent < 8 * 1024 * 1024  # it stopped reading long before the end
    assert after - before < 50 * 1024  # nothing like the head was kept
    assert "431 a request's head is at most 16384 bytes" in (tmp_path / "serve.log").read_text()


def test_slow_and_idle_connections_are_closed_and_real_callbacks_are_answered_all_the_while(
    sqlite_url: str, tmp_path: Path
) -> None:
    attempts = _attempts(sqlite_url, 20)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # this test's own 1,000 sockets
    with (
        serving(sqlite_url, tmp_path, DIALER_WEBHOOK_HEAD_TIMEOUT="2") as (port, process),
        ExitStack() as attack,
    ):
        idle = [attack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(600)]
        slow = [attack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(400)]
        for connection in slow:
            connection.sendall(b"POST /webhooks/vonage/x/event HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:  # real callbacks while the attack holds 1,000 connections
            answered = [
                code
                for part in pool.map(lambda part: _callbacks(port, part), [attempts[i::4] for i in range(4)])
                for code in part
            ]
        took = time.monotonic() - started
        for connection in slow:  # a byte now and then: slowloris
            with suppress(OSError):
                connection.sendall(b"X")
        time.sleep(3)  # past the head timeout
        closed = 0
        for connection in [*idle, *slow]:
            connection.settimeout(2)
            with suppress(TimeoutError, OSError):
                closed += connection.recv(1) == b""
        assert process.poll() is None
    assert answered == [204] * 20 and took < 10
    assert closed == 1000  # every one of them closed by the receiver
    assert "closed: no request head within 2 s" in (tmp_path / "serve.log").read_text()


def test_a_provider_route_without_credentials_is_refused_in_one_line(sqlite_url: str, tmp_path: Path) -> None:
    with serving(sqlite_url, tmp_path) as (port, _):  # no DIALER_FRACTEL__WEBHOOK_PASSWORD
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/fractel/account/event", json={"uid": "x", "status": "BEGIN"}
        )
    log = (tmp_path / "serve.log").read_text()
    assert answer.status_code == 401
    assert "POST /webhooks/fractel/…/event 401: no Fractel callbacks are taken here" in log
    assert "Traceback" not in log
