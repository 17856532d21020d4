"""The receiver's guarded protocol over real sockets, in this process: a stand-in app, timeouts of a
second. Pipelined requests, bodies that never come, refusals in turn, the cap on connections."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from typing import Any, ClassVar

import pytest

from dialer.embedded import BackgroundServer
from dialer.serving import MAX_PIPELINED, GuardedHttpTools, uvicorn_options
from dialer.settings import Settings

BIG = b"b" * (16 * 1024 * 1024)


class Quick(GuardedHttpTools):
    """The guarded protocol with its timeouts at a second; it counts what it reads and the
    connections it lost, for the tests to wait on."""

    max_head = 16 * 1024
    head_timeout = body_timeout = closing_grace = 1.0
    read = 0
    lost: ClassVar[list[int]] = []  # the client ports of the connections lost

    def data_received(self, data: bytes) -> None:
        Quick.read += len(data)
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        Quick.lost.append(self.client[1] if self.client else 0)
        super().connection_lost(exc)


class StandIn:
    """A stand-in receiver: it reads a request's body and answers its length; ``/slow`` answers
    (without reading its body) once ``go`` is set; ``/big`` answers 16 MB."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.big_sent = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        if scope["path"] == "/slow":
            await asyncio.to_thread(self.go.wait, 10)
        else:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        answer = BIG if scope["path"] == "/big" else str(len(body)).encode()
        headers = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        if scope["path"] == "/big":
            self.big_sent.set()


class Reader:
    """The responses coming on a socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        self.buffer += chunk

    def response(self) -> tuple[int, bytes]:
        """The next response's status and body."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = re.search(rb"content-length: *(\d+)", head, re.I)
        assert length, head
        while len(self.buffer) < int(length[1]):
            self._more()
        body, self.buffer = self.buffer[: int(length[1])], self.buffer[int(length[1]) :]
        return int(head.split()[1]), body


def ended(sock: socket.socket, within: float = 3.0) -> bool:
    """Whether the server ends ``sock`` (closed or cut) within ``within`` seconds, sending nothing."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.01)


SLOW = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
ECHO = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, int]]:
    """The stand-in app served by the quick protocol (16 connections at most); its port."""
    app = StandIn()
    options = {"http": Quick, "limit_concurrency": 17, "timeout_keep_alive": 5}
    with BackgroundServer(app, options=options) as server:
        try:
            yield app, server.port
        finally:
            app.go.set()  # the server waits for its requests before it stops


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    return sock


def test_a_pipelined_requests_head_is_counted_from_its_first_byte(
    stand_in: tuple[StandIn, int], caplog: pytest.LogCaptureFixture
) -> None:
    app, port = stand_in
    with connect(port) as client:
        before = Quick.read
        begun = SLOW + b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 12 * 1024
        client.sendall(begun)  # 12 KiB of the second head, read while the first request runs
        wait_until(lambda: Quick.read >= before + len(begun))
        app.go.set()
        reader = Reader(client)
        assert reader.response() == (200, b"0")
        client.sendall(b"a" * 6 * 1024)  # 18 KiB in all
        assert reader.response()[0] == 431  # in turn, after the first answer
        assert ended(client)
    assert "431 a request's head is at most 16384 bytes" in caplog.text


def test_a_huge_pipelined_head_cuts_the_connection_while_an_earlier_answer_is_owed(
    stand_in: tuple[StandIn, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = stand_in
    with connect(port) as client:
        client.sendall(SLOW + b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: ")
        sent = 0
        with suppress(BrokenPipeError, ConnectionResetError):
            while sent < 8 * 1024 * 1024:
                client.sendall(b"a" * 65536)
                sent += 65536
        assert ended(client)  # no 431 before the first request's answer: nothing at all
    assert sent < 8 * 1024 * 1024  # it stopped reading long before the end
    assert "cut: a request's head is at most 16384 bytes (an answer was still owed)" in caplog.text


def test_a_pipelined_callback_with_a_body_over_16_kib_is_taken(stand_in: tuple[StandIn, int]) -> None:
    app, port = stand_in
    with connect(port) as client:
        before = Quick.read
        begun = SLOW + b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 40960\r\n\r\n" + b"x" * 1024
        client.sendall(begun)
        wait_until(lambda: Quick.read >= before + len(begun))
        client.sendall(b"x" * (40960 - 1024))  # read once the first request is answered
        app.go.set()
        reader = Reader(client)
        assert [reader.response(), reader.response()] == [(200, b"0"), (200, b"40960")]


def test_a_body_that_does_not_come_gets_408_and_the_connection_closes(
    stand_in: tuple[StandIn, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = stand_in
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert Reader(client).response() == (408, b"no request body within 1 s")
        took = time.monotonic() - started
        assert ended(client)
    assert 0.9 < took < 3
    assert "408 no request body within 1 s" in caplog.text


def test_a_pipelined_request_is_timed_from_its_turn_not_while_it_waits(stand_in: tuple[StandIn, int]) -> None:
    app, port = stand_in
    with connect(port) as client:
        client.sendall(SLOW + b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n" + b"x" * 10)
        assert not ended(client, within=1.5)  # waiting its turn past the body timeout: untimed
        app.go.set()
        reader = Reader(client)
        assert reader.response() == (200, b"0")
        started = time.monotonic()
        assert reader.response() == (408, b"no request body within 1 s")  # timed from its turn
        assert 0.9 < time.monotonic() - started < 3


def test_more_than_16_requests_waiting_their_turn_cut_the_connection(
    stand_in: tuple[StandIn, int], caplog: pytest.LogCaptureFixture
) -> None:
    app, port = stand_in
    with connect(port) as fits, connect(port) as too_many:
        fits.sendall(SLOW + ECHO * MAX_PIPELINED)
        too_many.sendall(SLOW + ECHO * (MAX_PIPELINED + 1))
        assert ended(too_many)  # at once, before the first request is answered
        app.go.set()
        reader = Reader(fits)
        assert [reader.response() for _ in range(MAX_PIPELINED + 1)] == [(200, b"0")] * (MAX_PIPELINED + 1)
    assert "cut: more than 16 requests waiting their turn (an answer was still owed)" in caplog.text


def test_blank_lines_between_requests_do_not_hold_a_connection(stand_in: tuple[StandIn, int]) -> None:
    _, port = stand_in
    with connect(port) as client:
        client.sendall(ECHO)
        assert Reader(client).response() == (200, b"0")
        started = time.monotonic()
        with suppress(BrokenPipeError, ConnectionResetError):
            while not ended(client, within=0.1):  # a blank line every tenth of a second
                client.sendall(b"\r\n")
        assert time.monotonic() - started < 3  # the head timeout (1 s), not the keep-alive's


def test_a_blank_line_after_a_request_is_not_timed_while_its_answer_is_slow(
    stand_in: tuple[StandIn, int],
) -> None:
    """RFC 9112 asks servers to take a blank line after a body: the time the app takes (a database
    waiting on a lock) is not the client's to be cut for."""
    app, port = stand_in
    with connect(port) as client:
        before = Quick.read
        client.sendall(SLOW)
        wait_until(lambda: Quick.read >= before + len(SLOW))
        client.sendall(b"\r\n")  # on its own, once the request runs
        wait_until(lambda: Quick.read >= before + len(SLOW) + 2)
        time.sleep(Quick.head_timeout * 1.5)  # the head timeout passes while the answer is owed
        app.go.set()
        assert Reader(client).response() == (200, b"0")


def test_a_client_that_does_not_read_its_answers_is_cut(
    stand_in: tuple[StandIn, int], caplog: pytest.LogCaptureFixture
) -> None:
    """An answer owed to a client that does not read waits for it for ever in uvicorn: the
    connection would be held past every other timer."""
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", stand_in[1]))
        client.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n" + ECHO)  # and never reads
        asked = time.monotonic()
        wait_until(lambda: client.getsockname()[1] in Quick.lost)
        assert time.monotonic() - asked < 4  # the body timeout (1 s) once the buffer filled
    assert "has not read its answers for 1 s" in caplog.text


def test_a_refused_client_that_does_not_read_is_cut_after_the_grace(
    stand_in: tuple[StandIn, int], caplog: pytest.LogCaptureFixture
) -> None:
    app, port = stand_in
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        assert app.big_sent.wait(5)  # answered, most of it still in the server's buffer
        client.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000)
        wait_until(lambda: "431 a request's head" in caplog.text)  # in turn, behind the 16 MB
        refused = time.monotonic()
        wait_until(lambda: client.getsockname()[1] in Quick.lost)  # the client never reads: cut
        assert 0.9 < time.monotonic() - refused < 3


def test_connections_past_the_cap_get_503_at_once_and_those_held_are_never_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = uvicorn_options(Settings(webhook_max_connections=16)) | {"http": Quick}
    with BackgroundServer(StandIn(), options=options) as server, ExitStack() as sockets:
        held = [sockets.enter_context(connect(server.port)) for _ in range(16)]
        for sock in held:  # each of the 16 taken, the last one too
            sock.sendall(ECHO)
            assert Reader(sock).response() == (200, b"0")
        with connect(server.port) as extra:
            started = time.monotonic()
            assert Reader(extra).response()[0] == 503  # before it sent anything
            assert ended(extra)
            assert 0.9 < time.monotonic() - started < 3  # a second to read it, then cut
        held[-1].sendall(ECHO)  # a connection held is still served
        assert Reader(held[-1]).response() == (200, b"0")
    assert "503: the receiver holds 16 connections at once" in caplog.text
