from __future__ import annotations

import pytest

from dialer.models import Campaign
from tests.dialer.factories import finished_campaign


@pytest.fixture(params=["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.services)])
def url(request: pytest.FixtureRequest) -> str:
    """Both databases (their drivers give rows, timestamps and bulk writes differently)."""
    return str(request.getfixturevalue(request.param))


@pytest.fixture
def finished(url: str) -> Campaign:
    """A campaign with results, on each database: see :func:`finished_campaign`."""
    return finished_campaign(url)
