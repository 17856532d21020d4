"""`dialer serve` under abuse, over real sockets: huge heads, slow heads, bodies that never come,
idle connections, clients leaving mid-body, a low open-file limit. Real callbacks are answered all
the while. (The protocol's finer cases, with timeouts of a second: tests/dialer/test_guard.py.)"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from dialer.embedded import loopback_socket
from dialer.models import Attempt
from tests.dialer.factories import campaign_with_contacts, queued_attempts

EVENT = {"status": "ringing", "from": "14155550100", "to": "12125550106"}


@contextmanager
def serving(
    url: str, tmp_path: Path, most_files: int | None = None, **env: str
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`dialer serve` on a free loopback port, its open-file limit at 256 (as some systems start
    processes; ``most_files``: the most it may raise it to, else the system's), with ``env`` added
    to its settings."""
    with loopback_socket() as free:
        port = free.getsockname()[1]

    def low_limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, most_files or hard))

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


@pytest.fixture
def many_sockets() -> Iterator[None]:
    """Room in this process for the test's own thousand-odd sockets (its limit as it was after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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


@pytest.mark.usefixtures("many_sockets")  # 1,000 of them
def test_slow_and_idle_connections_are_closed_and_real_callbacks_are_answered_all_the_while(
    sqlite_url: str, tmp_path: Path
) -> None:
    attempts = _attempts(sqlite_url, 20)
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


def _log_says(tmp_path: Path, text: str) -> bool:
    deadline = time.monotonic() + 10
    while text not in (tmp_path / "serve.log").read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _answers(connections: list[socket.socket], within: float = 5.0) -> list[tuple[bytes, bool]]:
    """What the receiver says on each connection: the first line it sends (b"" if none), and whether
    it ends the connection (closes or cuts it) within ``within`` seconds."""
    said = {connection: b"" for connection in connections}
    ended: set[socket.socket] = set()
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while len(ended) < len(connections) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                connection = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = connection.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                said[connection] += chunk
                if not chunk:
                    selector.unregister(connection)
                    ended.add(connection)
    return [(said[connection].split(b"\r\n")[0], connection in ended) for connection in connections]


def _open(connection: socket.socket) -> bool:
    """Whether ``connection`` is held open, with nothing said on it."""
    connection.setblocking(False)
    try:
        connection.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def test_a_client_leaving_mid_body_is_one_line_in_the_log_not_a_traceback(
    sqlite_url: str, tmp_path: Path
) -> None:
    with serving(sqlite_url, tmp_path) as (port, _):
        with socket.create_connection(("127.0.0.1", port)) as leaving:
            leaving.sendall(
                b"POST /webhooks/vonage/x/event HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"status": '
            )
            assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200  # the body is awaited
        assert _log_says(tmp_path, "left before its request's body came")
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log


def test_bodies_that_never_come_get_408_and_real_callbacks_are_answered_after(
    sqlite_url: str, tmp_path: Path
) -> None:
    attempts = _attempts(sqlite_url, 4)
    settings = {"DIALER_WEBHOOK_BODY_TIMEOUT": "1", "DIALER_WEBHOOK_MAX_CONNECTIONS": "100"}
    with serving(sqlite_url, tmp_path, **settings) as (port, _), ExitStack() as attack:
        stuck = [attack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(110)]
        for connection in stuck:  # a head, then a hundredth of the body promised, then nothing
            connection.sendall(
                b"POST /webhooks/vonage/x/event HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{"
            )
        answers = _answers(stuck)
        answered = _callbacks(port, attempts)
    assert answers.count((b"HTTP/1.1 408 Request Timeout", True)) == 100  # each held one, a second on
    assert answers.count((b"HTTP/1.1 503 Service Unavailable", True)) == 10  # past the cap, at once
    assert answered == [204] * 4
    assert "408 no request body within 1 s" in (tmp_path / "serve.log").read_text()


@pytest.mark.usefixtures("many_sockets")  # 1,100 of them
def test_connections_past_the_cap_get_503_not_a_reset_at_a_1024_file_limit(
    sqlite_url: str, tmp_path: Path
) -> None:
    attempts = _attempts(sqlite_url, 1)
    with serving(sqlite_url, tmp_path, most_files=1024) as (port, process), ExitStack() as attack:
        # More connections than the receiver has files: it holds 896 (1,024 less what it needs
        # besides), answers the others 503 and cuts them a second later. (Those past its last
        # file the event loop closes unanswered and unlogged: nothing can be done there.)
        held = [attack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(1100)]
        past_the_cap = _answers(held[896:])
        answered = _callbacks(port, attempts)  # its own connection: past the cap, so 503
        still_held = sum(_open(connection) for connection in held[:896])
        assert process.poll() is None
    assert (b"HTTP/1.1 503 Service Unavailable", True) in past_the_cap
    assert all(ended for _, ended in past_the_cap)  # none held past the cap
    assert answered == [503]  # not a reset
    assert still_held == 896
    assert "503: the receiver holds 896 connections at once" in (tmp_path / "serve.log").read_text()
