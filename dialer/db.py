"""Engines, sessions and migrations."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dialer.errors import ConfigurationError
from dialer.files import destination, why

if TYPE_CHECKING:
    from alembic.config import Config

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


Db = Session | sa.Connection
"""Where statements run: an ORM session, or a connection when no ORM object is involved."""


def get_engine(url: str) -> Engine:
    """One engine per database URL in this process."""
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = _create_engine(url)
        return _ENGINES[url]


def dispose_engines() -> None:
    """Close every pooled connection of this process (before it exits, so none is left dangling)."""
    for engine in _ENGINES.values():
        engine.dispose()


def _create_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            check_sqlite_path(sa.make_url(url))
            engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        engine = sa.create_engine(url, pool_size=10, max_overflow=10)
        sa.event.listen(engine, "checkin", _checked_in)
        sa.event.listen(engine, "checkout", _ping_if_idle(engine.dialect))
        return engine
    except (sa.exc.ArgumentError, ImportError) as error:
        raise ConfigurationError(f"DIALER_DATABASE_URL is not usable: {error}") from None


def check_sqlite_path(url: sa.URL) -> None:
    """Refuse a SQLite file that cannot be opened, saying why: SQLite says only "unable to open
    database file", whether the directory is missing or the path is a symlink loop."""
    file = url.database
    if not file or file == ":memory:" or url.query.get("uri"):
        return
    try:
        target = destination(Path(file))  # a new database is made where the path (or its link) leads
    except OSError as error:
        raise ConfigurationError(f"sqlite database {file}: {why(error)}") from None
    if not target.parent.is_dir():
        raise ConfigurationError(f"sqlite database {file}: the directory {target.parent} does not exist")


PING_AFTER = 5.0
"""Seconds a pooled connection may sit unused before it is pinged when taken again."""


def _checked_in(_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: sa.Dialect) -> Any:
    """Ping a pooled connection taken again after ``PING_AFTER`` idle seconds (a database restarted
    meanwhile has closed it), and only then: pinging each one taken (``pool_pre_ping``) cost a
    worker three round trips per call, a tenth of its time (py-spy, bench/lifecycle.py). A
    connection in constant use that the database drops fails its next statement, which makes the
    pool drop every connection older than that failure."""

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise sa.exc.DisconnectionError(f"a pooled connection is gone: {error}") from error

    return checkout


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-16384")  # 16 MB, not 2: an import's index pages stay cached
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def transaction(url: str) -> Iterator[sa.Connection]:
    """A connection in a transaction, committed when the block ends and rolled back on error: for
    steps of plain statements, without the ORM's bookkeeping (the receiver's, one per callback)."""
    with get_engine(url).begin() as connection:
        yield connection


@contextmanager
def statement_connection(url: str) -> Iterator[sa.Connection]:
    """A connection whose every statement is committed on its own (no BEGIN and COMMIT round trips).

    For a step that is one statement (a read, a guarded update): a worker placing calls makes a
    few of them per call, run as plain SQL, without the ORM's bookkeeping. Steps of several
    statements that must hold together use :func:`session_scope`.
    """
    with get_engine(url).connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def changed(db: Db, statement: sa.Executable, params: dict[str, Any] | None = None) -> int:
    """Run a guarded UPDATE or DELETE and say how many rows it changed (1 means the guard held)."""
    result = db.execute(statement, params)
    return cast(sa.CursorResult[Any], result).rowcount


def among(column: Any, values: Iterable[Any]) -> sa.ColumnElement[bool]:
    """``column IN (values)`` for a fixed list, as one parameter per value. ``in_()`` of a list
    is expanded again at every execution: 8% of the receiver's CPU for recording a callback."""
    return cast(sa.ColumnElement[bool], column.in_([sa.literal(value, column.type) for value in values]))


def insert_new(session: Db, model: Any, **values: Any) -> bool:
    """Insert one row into ``model``'s table unless it breaks a unique constraint; say whether it
    did. No savepoint is needed, as it would be to catch the IntegrityError."""
    table = model.__table__
    return bool(insert_new_rows(session, table, [values], key=table.c.id))


def insert_new_rows(
    session: Db, table: sa.Table, rows: list[dict[str, Any]], *, key: sa.Column[Any]
) -> set[Any]:
    """Insert ``rows`` into ``table`` in one statement, leaving out those that would break a unique
    constraint; the ``key`` of each row inserted."""
    if not rows:
        return set()
    bind = session if isinstance(session, sa.Connection) else session.get_bind()
    statement = _insert_new(bind.dialect.name, table, key.name)
    return set(session.execute(statement, rows[0] if len(rows) == 1 else rows).scalars())


@functools.cache
def _insert_new(dialect: str, table: sa.Table, key: str) -> sa.Executable:
    """The statement of :func:`insert_new_rows`, made once per table (its columns are the rows' keys)."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing().returning(table.c[key])


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _alembic_config(url: str) -> Config:
    from alembic.config import Config  # migrations only: most commands never need alembic

    config = Config()
    config.set_main_option("script_location", str(resources.files("dialer") / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(url: str) -> None:
    """Apply every migration to the database at ``url``."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(url), "head")
    except sa.exc.OperationalError as error:
        raise ConfigurationError(f"cannot reach the database: {error.orig}") from None


def revisions(url: str) -> tuple[str | None, str | None]:
    """The database's migration revision (None: no tables yet) and the newest this code has."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision(), head


def make_revision(url: str, message: str) -> None:
    """Write a new autogenerated migration (a developer's command)."""
    from alembic import command

    command.revision(_alembic_config(url), message=message, autogenerate=True)
