"""Shared by the benchmarks: run a command as a child and read its wall time and peak memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import sqlalchemy as sa

POSTGRES_URL = os.environ.get("DIALER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DIALER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and its living descendants (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float
    output: str


def measure(command: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run ``command``; its wall time and peak resident memory.

    The peak is the larger of the kernel's figure for the command's own process (from wait4) and
    the most its whole process tree held at once (helper processes included), sampled every 20 ms.
    """
    started = time.perf_counter()
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    tree_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal tree_peak
        while not done.wait(0.02):
            tree_peak = max(tree_peak, _tree_rss(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{output}")
    return Run(seconds, max(usage.ru_maxrss * 1024, tree_peak) / 2**20, output)


def _tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants right now (Linux /proc)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") + sum(_tree_rss(int(child)) for child in children)


def dialer(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "dialer", *arguments]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one measurement, dropped afterwards."""
    admin = sa.create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    name = f"dialer_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


AREA_CODES = np.array([201, 202, 206, 212, 213, 305, 312, 404, 415, 512, 617, 702, 713, 718, 805, 917])
CITIES = np.array(["Boston", "Chicago", "Zürich", "São Paulo", "London", "Austin", "Seattle"])


def _phone(shape: float, area: int, exchange: int, line: int, mobile: int) -> str:
    if shape < 0.50:
        return f"+1 ({area}) {exchange}-{line:04d}"
    if shape < 0.75:
        return f"+44 7{mobile // 10_000_000 % 4 + 4}{mobile % 10_000_000:07d}{line % 10}"
    if shape < 0.97:
        return f"{area}.{exchange}.{line:04d}"
    return "not a number" if shape < 0.99 else ""


def write_contacts(path: Path, rows: int, seed: int = 1) -> None:
    random = np.random.default_rng(seed)
    phones = [
        _phone(*values)
        for values in zip(
            random.random(rows).tolist(),
            random.choice(AREA_CODES, rows).tolist(),
            random.integers(200, 1000, rows).tolist(),
            random.integers(0, 10_000, rows).tolist(),
            random.integers(0, 100_000_000, rows).tolist(),
            strict=True,
        )
    ]
    for index in random.integers(1, rows, rows // 50).tolist():
        phones[index] = phones[index // 2]
    days = random.integers(1, 29, rows).tolist()
    hours = random.integers(8, 18, rows).tolist()
    cities = random.choice(CITIES, rows).tolist()
    with path.open("w", encoding="utf-8") as out:
        out.write("phone,first_name,appointment,city,account\n")
        out.writelines(
            f"{phone},Person {i},December {day} at {hour}:00,{city},ACC-{i:07d}\n"
            for i, (phone, day, hour, city) in enumerate(zip(phones, days, hours, cities, strict=True))
        )


def campaign_file(directory: Path) -> Path:
    text = resources.files("dialer").joinpath("examples/vonage.toml").read_text()
    path = directory / "bench.toml"
    path.write_text(text.replace('name = "appointment-reminders-vonage"', 'name = "bench"'))
    return path
