"""The whole system as deployed: Celery workers and beat as processes, Redis, PostgreSQL, the
receiver and the simulator on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from dialer.cli import main
from dialer.embedded import loopback_socket
from dialer.providers import PROVIDERS
from tests.e2e import campaign_status, check_campaign, write_campaign, write_contacts

pytestmark = pytest.mark.services

CONTACTS = 200
RATE = 20


def _free_port() -> int:
    sock = loopback_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@contextmanager
def processes(
    commands: dict[str, list[str]], *, env: dict[str, str], cwd: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (cwd / f"{name}.log").open("wb") as log:
                started[name] = subprocess.Popen(
                    command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
                )
        yield started
    finally:
        for process in started.values():
            process.send_signal(signal.SIGTERM)
        for process in started.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def _run(runner: CliRunner, env: dict[str, str], *args: str) -> str:
    result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def provider_env(
    provider: str, credentials: dict[str, dict[str, str]], *, sim_url: str, directory: Path
) -> dict[str, str]:
    """Every provider's credentials as DIALER_* variables, and ``provider`` pointed at its simulator."""
    env = {}
    for name, values in credentials.items():
        for key, value in values.items():
            if key == "private_key":  # a PEM file, as an operator would configure it
                path = directory / f"{name}.pem"
                path.write_text(value)
                value = str(path)
            env[f"DIALER_{name.upper()}__{key.upper()}"] = value
    prefix = f"DIALER_{provider.upper()}__"
    env[prefix + "BASE_URL"] = sim_url
    env[prefix + "RATE_LIMIT"] = str(RATE)
    if provider == "routee":
        env[prefix + "AUTH_URL"] = sim_url
    return env


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_campaign_runs_on_celery_workers_redis_and_postgresql(
    tmp_path: Path, postgres_url: str, redis_url: str, credentials: dict[str, dict[str, str]], provider: str
) -> None:
    sim_port, web_port = _free_port(), _free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIALER_")},
        "DIALER_DATABASE_URL": postgres_url,
        "DIALER_REDIS_URL": redis_url,
        "DIALER_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "DIALER_TICK_SECONDS": "0.5",
        "DIALER_SWEEP_SECONDS": "2",
        "DIALER_REQUEUE_AFTER": "15",
        **provider_env(provider, credentials, sim_url=sim_url, directory=tmp_path),
    }
    dialer = [sys.executable, "-m", "dialer"]
    celery = [sys.executable, "-m", "celery", "-A", "workers"]
    commands = {
        "simulator": [
            *dialer,
            "simulate",
            "--provider",
            provider,
            "--port",
            str(sim_port),
            "--rate-limit",
            str(RATE),
            "--time-scale",
            "0.05",
        ],
        "receiver": [*dialer, "serve", "--port", str(web_port)],
        "worker1": [*celery, "worker", "--pool", "threads", "-c", "16", "-n", "w1@%h", "-l", "warning"],
        "worker2": [*celery, "worker", "--pool", "threads", "-c", "16", "-n", "w2@%h", "-l", "warning"],
        "beat": [*celery, "beat", "-s", str(tmp_path / "beat-schedule"), "-l", "warning"],
    }
    runner = CliRunner()
    _run(runner, env, "campaign", "create", str(write_campaign(tmp_path, provider=provider)))
    assert "imported 200" in _run(
        runner, env, "import", str(write_contacts(tmp_path, CONTACTS)), "--campaign", "e2e"
    )
    with processes(commands, env=env, cwd=tmp_path) as running:
        _wait_for(f"{sim_url}/_simulator/log")
        _wait_for(f"http://127.0.0.1:{web_port}/health")
        _run(runner, env, "campaign", "start", "e2e")
        deadline = time.monotonic() + 150
        while campaign_status(postgres_url) == "running":
            dead = [name for name, process in running.items() if process.poll() is not None]
            assert not dead, f"{dead} exited: " + "".join(
                (tmp_path / f"{n}.log").read_text()[-2000:] for n in dead
            )
            assert time.monotonic() < deadline, _run(runner, env, "status", "e2e")
            time.sleep(1)
        export = tmp_path / "results.csv"
        _run(runner, env, "export", "e2e", "--out", str(export))
        check_campaign(
            postgres_url,
            provider=provider,
            simulator_url=sim_url,
            export=export,
            queueing=CONTACTS / RATE + 5,
        )
