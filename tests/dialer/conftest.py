from __future__ import annotations

import pytest

from dialer.models import Campaign
from tests.dialer.factories import finished_campaign


@pytest.fixture
def finished(sqlite_url: str) -> Campaign:
    """A campaign with results: see :func:`finished_campaign`."""
    return finished_campaign(sqlite_url)
