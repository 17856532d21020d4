"""The migrations make exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import dialer.models  # noqa: F401  (registers the tables)
from dialer import db


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def test_the_migrated_schema_is_the_models(migrated: str) -> None:
    with db.get_engine(migrated).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []
