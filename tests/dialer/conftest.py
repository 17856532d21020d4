from __future__ import annotations

import pytest

from dialer.models import Campaign
from dialer.settings import Settings
from tests.dialer.factories import finished_campaign


@pytest.fixture(params=["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.services)])
def url(request: pytest.FixtureRequest) -> str:
    """Both databases (their drivers give rows, timestamps and bulk writes differently)."""
    return str(request.getfixturevalue(request.param))


@pytest.fixture
def finished(url: str) -> Campaign:
    """A campaign with results, on each database: see :func:`finished_campaign`."""
    return finished_campaign(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(
    request: pytest.FixtureRequest, settings: Settings, credentials: dict[str, dict[str, str]]
) -> Settings:
    """The settings on SQLite, then on PostgreSQL (where concurrency and constraints are real)."""
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_url")
    return Settings(database_url=url, public_url=settings.public_url, **credentials)
