"""Worker "hosts" of their own: network namespaces on one bridge, for the benches and tests.

Each host is a namespace with its own loopback, address, routes and TCP stack, joined to this
machine by a veth pair on a bridge, like machines on one LAN. The services this machine runs on
loopback (Redis, PostgreSQL, the simulator) are not on the bridge: a host reaches them through
tests/netdelay.py listening on this machine's bridge address, with or without a delay.

Needs root (or CAP_NET_ADMIN) and iproute2; :func:`unavailable` says why not, when not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Lan:
    gateway: str
    """This machine's address on the bridge, where the hosts reach its services."""
    hosts: tuple[str, ...]
    """The namespaces' names."""
    addresses: tuple[str, ...]

    def on(self, host: int, command: list[str]) -> list[str]:
        """``command`` run on host ``host`` (an index into :attr:`hosts`)."""
        return ["ip", "netns", "exec", self.hosts[host], *command]


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


def _ip(*args: str, host: str | None = None) -> None:
    command = ["ip", *args] if host is None else ["ip", "netns", "exec", host, "ip", *args]
    subprocess.run(command, check=True, capture_output=True)


@contextmanager
def lan(count: int) -> Iterator[Lan]:
    """``count`` hosts on a bridge of their own (a /24 picked from this process's id); all removed
    afterwards, whatever happened."""
    tag = os.getpid() % 100_000
    subnet = f"10.231.{tag % 250}"
    bridge = f"dlbr{tag}"
    hosts = tuple(f"dialer-{tag}-h{number}" for number in range(count))
    addresses = tuple(f"{subnet}.{number + 2}" for number in range(count))
    with ExitStack() as cleanup:
        _ip("link", "add", bridge, "type", "bridge")
        cleanup.callback(_ip, "link", "del", bridge)
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for number, (host, address) in enumerate(zip(hosts, addresses, strict=True)):
            outside, inside = f"dl{tag}v{number}", f"dl{tag}p{number}"
            _ip("netns", "add", host)
            cleanup.callback(_ip, "netns", "del", host)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            cleanup.callback(subprocess.run, ["ip", "link", "del", outside], capture_output=True)
            _ip("link", "set", inside, "netns", host)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("addr", "add", f"{address}/24", "dev", inside, host=host)
            _ip("link", "set", inside, "up", host=host)
            _ip("link", "set", "lo", "up", host=host)
        yield Lan(gateway=f"{subnet}.1", hosts=hosts, addresses=addresses)
