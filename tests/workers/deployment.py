"""The system as deployed, for tests: simulator, receiver, two Celery workers and beat as processes,
on the real Redis and PostgreSQL, everything on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from celery import Celery
from click.testing import CliRunner

from dialer.cli import main
from dialer.embedded import loopback_socket
from dialer.settings import environment, get_settings
from dialer.simulators import simulator_urls
from tests.netns import Lan, lan

RATE = 20
DIALER = [sys.executable, "-m", "dialer"]
CELERY = [sys.executable, "-m", "celery", "-A", "workers"]
ROOT = Path(__file__).resolve().parents[2]


def _renice(priority: int) -> None:
    with contextlib.suppress(PermissionError):  # not root: it shares the cores like everything else
        os.setpriority(os.PRIO_PROCESS, 0, priority)


def free_port() -> int:
    sock = loopback_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def wait_for_workers(broker_url: str, count: int, timeout: float = 60) -> None:
    """Until ``count`` Celery workers on ``broker_url`` answer a ping (they consume tasks then)."""
    app = Celery("ping", broker=broker_url)
    deadline = time.monotonic() + timeout
    while len(app.control.ping(timeout=0.5)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} workers started on {broker_url}")
    app.close()


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def provider_env(
    provider: str,
    credentials: dict[str, dict[str, str]],
    *,
    sim_url: str,
    directory: Path,
    rate: float = RATE,
) -> dict[str, str]:
    """Every provider's credentials as DIALER_* variables, and ``provider`` pointed at its simulator."""
    values = {name: dict(fields) for name, fields in credentials.items()}
    for name, fields in values.items():
        if "private_key" in fields:  # a PEM file, as an operator would configure it
            path = directory / f"{name}.pem"
            path.write_text(fields["private_key"])
            fields["private_key"] = str(path)
    values[provider] |= simulator_urls(provider, sim_url) | {"rate_limit": str(rate)}
    return environment(values)


def _host_port(url: str) -> str:
    parsed = urlsplit(url)
    return f"{parsed.hostname}:{parsed.port or {'redis': 6379}.get(parsed.scheme, 5432)}"


def _with_address(url: str, host: str, port: int) -> str:
    parsed = urlsplit(url)
    user = f"{parsed.username}@" if parsed.username else ""
    return urlunsplit(parsed._replace(netloc=f"{user}{host}:{port}"))


@dataclass
class Deployment:
    directory: Path
    env: dict[str, str]
    sim_url: str
    web_url: str
    threads: int = 16
    lan: Lan | None = None
    """The hosts the workers and beat run on, if not this one (tests/netns.py)."""
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    runner: CliRunner = field(default_factory=CliRunner)

    def dialer(self, *args: str) -> str:
        """Run a ``dialer`` command as an operator would (its own settings, as a new process reads
        them); it must succeed."""
        get_settings.cache_clear()
        result = self.runner.invoke(main, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def start(
        self,
        name: str,
        command: list[str],
        *,
        priority: int = 0,
        env: dict[str, str] | None = None,
        host: int | None = None,
    ) -> None:
        """Start a process (on the lan's ``host``, if given); a negative ``priority`` (nice value)
        where the system allows it."""
        if host is not None and self.lan is not None:
            command = self.lan.on(host, command)
        with (self.directory / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                command,
                env=self.env | (env or {}),
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: _renice(priority)) if priority else None,
            )

    def start_worker(self, name: str, host: int | None = None) -> None:
        pool = ["--pool", "threads", "-c", str(self.threads)]
        self.start(name, [*CELERY, "worker", *pool, "-n", f"{name}@%h", "-l", "warning"], host=host)

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no acknowledgements, exactly like a machine that dies."""
        os.kill(self.running[name].pid, signal.SIGKILL)
        self.running[name].wait()

    def dead(self) -> str:
        """The log tails of processes that stopped by themselves."""
        return "".join(
            (self.directory / f"{name}.log").read_text()[-2000:]
            for name, process in self.running.items()
            if process.poll() is not None and process.returncode != -signal.SIGKILL
        )


@contextmanager
def deployment(
    directory: Path,
    *,
    provider: str,
    postgres_url: str,
    redis_url: str,
    credentials: dict[str, dict[str, str]],
    settings: dict[str, str] | None = None,
    rate: float = RATE,
    workers: int = 2,
    threads: int = 16,
    time_scale: float = 0.05,
    delay: tuple[float, float] | None = None,
    delayed: frozenset[str] = frozenset({"provider"}),
    receivers: int = 1,
    hosts: bool = False,
) -> Iterator[Deployment]:
    """Start every process (``workers`` Celery workers of ``threads`` threads); stop them all afterwards.

    ``rate`` is the provider account's limit, the same for the simulator and the dialer;
    ``time_scale`` multiplies the simulated callees' delays (ringing, talking, answering). With
    ``delay`` (milliseconds, low and high), the workers and beat reach the ``delayed`` parts
    (``provider``, ``redis``, ``postgres``) through tests/netdelay.py, as across a network. With
    ``hosts``, each worker and beat run on a host of their own (tests/netns.py), which reaches
    every part through tests/netdelay.py on the bridge (delayed as said, the others at once).
    """
    if delay is None:
        delayed = frozenset()
    with lan(workers + 1) if hosts else nullcontext() as network:
        sim_port, web_port = free_port(), free_port()
        sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
        listen = "127.0.0.1" if network is None else network.gateway
        proxies: dict[str, list[str]] = {}
        urls = {"provider": sim_url, "redis": redis_url, "postgres": postgres_url}
        targets = {"provider": f"127.0.0.1:{sim_port}", "redis": _host_port(redis_url)}
        targets["postgres"] = _host_port(postgres_url)
        for part in sorted(targets if network is not None else delayed):
            port = free_port()
            low, high = delay if delay is not None and part in delayed else (0.0, 0.0)
            proxies[part] = [sys.executable, "-m", "tests.netdelay", "--listen", str(port), "--host", listen]
            proxies[part] += ["--to", targets[part], "--delay", str(low), str(high)]
            urls[part] = _with_address(urls[part], listen, port)
        provider_url, database, broker = urls["provider"], urls["postgres"], urls["redis"]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIALER_")},
            # Every process runs this checkout's code, wherever the package is installed from.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "DIALER_DATABASE_URL": database,
            "DIALER_REDIS_URL": broker,
            "DIALER_PUBLIC_URL": web_url,
            "DIALER_TICK_SECONDS": "0.5",
            "DIALER_SWEEP_SECONDS": "2",
            "DIALER_REQUEUE_AFTER": "15",
            **provider_env(provider, credentials, sim_url=provider_url, directory=directory, rate=rate),
            **(settings or {}),
        }
        system = Deployment(
            directory=directory, env=env, sim_url=sim_url, web_url=web_url, threads=threads, lan=network
        )
        simulate = ["simulate", "--provider", provider, "--port", str(sim_port), "--rate-limit", str(rate)]
        try:
            for part, command in proxies.items():
                system.start(f"proxy-{part}", command)
            # The simulator stands in for a provider whose machines do not share ours: it times the
            # requests it receives, so it runs ahead of our processes on this host's cores.
            system.start("simulator", [*DIALER, *simulate, "--time-scale", str(time_scale)], priority=-10)
            # The receiver is this side's front door, not behind the delayed link.
            system.start(
                "receiver",
                [*DIALER, "serve", "--port", str(web_port), "--workers", str(receivers)],
                env={"DIALER_DATABASE_URL": postgres_url},
            )
            for number in range(1, workers + 1):
                system.start_worker(f"w{number}", host=number - 1)
            beat = [*CELERY, "beat", "-s", str(directory / "beat-schedule"), "-l", "warning"]
            system.start("beat", beat, host=workers)
            wait_for(f"{sim_url}/_simulator/count")
            wait_for(f"{web_url}/health")
            wait_for_workers(redis_url, workers)  # a campaign started now is dialled at once, as in service
            yield system
        finally:
            for process in system.running.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in system.running.values():
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
