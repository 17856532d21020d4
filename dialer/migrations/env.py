"""Alembic environment: the URL comes from the caller, the metadata from dialer.models."""

from alembic import context
from sqlmodel import SQLModel

import dialer.models  # noqa: F401  (registers the tables)
from dialer.db import get_engine

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


def run() -> None:
    with get_engine(url).connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
