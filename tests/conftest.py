"""Shared fixtures: databases (SQLite per test, PostgreSQL per test when reachable), Redis, settings.

Tests that need Redis or PostgreSQL skip with a reason when no server is reachable, and fail
instead when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from dialer import db
from dialer.settings import Settings, get_settings
from dialer.simulators import dev_credentials


def _redis_url_of_this_worker(url: str) -> str:
    """Each pytest-xdist worker empties a Redis database of its own: gw0 the one named, gw1 the one
    below it, and so on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    parsed = redis.connection.parse_url(url)
    number = int(parsed.get("db", 0)) - int(worker.removeprefix("gw"))
    return f"{url.rsplit('/', 1)[0]}/{number}" if number >= 0 else url


REDIS_URL = _redis_url_of_this_worker(os.environ.get("DIALER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
POSTGRES_URL = os.environ.get("DIALER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI: a service test that silently skips in CI proves nothing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def fresh_settings() -> None:
    """Commands read settings once per process: each test's environment must be read anew."""
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def credentials() -> dict[str, dict[str, str]]:
    return dev_credentials()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'dialer.db'}"
    db.upgrade(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database with the schema, dropped afterwards."""
    admin = sa.create_engine(db.get_engine(POSTGRES_URL).url, isolation_level="AUTOCOMMIT")
    name = f"dialer_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        unavailable(f"no PostgreSQL at {POSTGRES_URL}: {error.orig}")
    url = str(sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False))
    db.upgrade(url)
    try:
        yield url
    finally:
        db.get_engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis database, emptied before and after."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as error:
        unavailable(f"no Redis at {REDIS_URL}: {error}")
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def settings(sqlite_url: str, credentials: dict[str, dict[str, str]]) -> Settings:
    return Settings(database_url=sqlite_url, public_url="http://127.0.0.1:8000", **credentials)
