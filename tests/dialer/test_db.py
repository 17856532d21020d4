"""Pooled PostgreSQL connections: pinged when taken again after sitting idle, not every time."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dialer import db

BACKEND = sa.text("SELECT pg_backend_pid()")


def test_a_pooled_connection_the_database_closed_while_idle_is_replaced_unseen(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.get_engine(postgres_url)
    with engine.connect() as connection:
        first = connection.execute(BACKEND).scalar_one()
    with engine.connect() as connection:  # taken again at once: the same one, no ping
        assert connection.execute(BACKEND).scalar_one() == first
    with sa.create_engine(engine.url, poolclass=sa.NullPool).connect() as admin:
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    monkeypatch.setattr(db, "PING_AFTER", 0.0)  # it has sat idle long enough to be pinged
    with engine.connect() as connection:
        assert connection.execute(BACKEND).scalar_one() != first


def test_without_the_ping_a_dropped_connection_fails_once_and_the_pool_starts_afresh(
    postgres_url: str,
) -> None:
    engine = db.get_engine(postgres_url)
    with engine.connect() as connection:
        first = connection.execute(BACKEND).scalar_one()
    with sa.create_engine(engine.url, poolclass=sa.NullPool).connect() as admin:
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    with pytest.raises(sa.exc.OperationalError), engine.connect() as connection:
        connection.execute(BACKEND)
    with engine.connect() as connection:
        assert connection.execute(BACKEND).scalar_one() != first
