"""The workers' HTTP client never sends a request on a connection a server may be closing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from dialer.embedded import loopback_socket
from dialer.runtime import KEEPALIVE_SECONDS, http_client
from dialer.settings import Settings

SERVER_IDLE = 3.0
"""The server's keep-alive: a request on a connection idle this long meets the server closing it."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


@contextmanager
def closing_server() -> Iterator[str]:
    """A server that answers every request, except one on a connection idle for SERVER_IDLE
    seconds or more: that one it drops unanswered, as when its close and the request cross."""
    listener = loopback_socket()
    listener.listen()

    def serve(connection: socket.socket) -> None:
        with connection:
            last = time.monotonic()
            while data := connection.recv(65536):
                if time.monotonic() - last >= SERVER_IDLE:
                    return  # closed as the request came
                assert data.endswith(b"\r\n\r\n")
                connection.sendall(OK)
                last = time.monotonic()

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()


def test_an_idle_connection_is_not_reused_once_a_server_may_be_closing_it(settings: Settings) -> None:
    assert KEEPALIVE_SECONDS < SERVER_IDLE
    with closing_server() as url, http_client(settings) as client:
        assert client.get(url).text == "ok"
        assert client.get(url).text == "ok"  # at once: the same connection, kept
        time.sleep(SERVER_IDLE + 0.2)
        assert client.get(url).text == "ok"  # on a fresh connection
    with closing_server() as url, httpx.Client() as default:  # httpx's own 5 s keep-alive, for contrast
        default.get(url)
        time.sleep(SERVER_IDLE + 0.2)
        with pytest.raises(httpx.RemoteProtocolError):
            default.get(url)
