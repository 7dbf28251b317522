"""The notifier's schema, evolved by Alembic revisions (versions/), run at every start.

`upgrade` brings a database to the newest revision; replicas starting together take turns (a
PostgreSQL advisory lock, SQLite's write lock), so none fails on a table another has just
created. A database made by the notifier before migrations existed (tables, no alembic_version)
is recognised and stamped at the initial revision, not created again. A failing revision raises
and rolls back: the database stays as it was.

A change to store/tables.py needs a revision beside it: versions/NNNN_what_changed.py with
`revision = "NNNN"` and `down_revision` the one before, shaped as 0001 is.
tests/test_store_migrations.py fails, on SQLite and PostgreSQL, until the revisions build exactly
the tables the models describe.
"""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

INITIAL = "0001"
_SCHEMA_LOCK = 0x706C7477  # "pltw": the advisory lock held while migrating
logging.getLogger("alembic.runtime.plugins").setLevel(
    logging.WARNING
)  # a line per plugin, each start


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for these revisions; env.py migrates `connection`."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine) -> None:
    """Migrate the engine's database to the newest revision, in one transaction."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
        elif connection.dialect.name == "sqlite":
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and "escalations" in tables:
        command.stamp(config, INITIAL)  # created by the notifier's create_all, before Alembic
    command.upgrade(config, "head")
