"""The notifier's schema, evolved by Alembic revisions (versions/), run at every start.

`upgrade` brings a database to the newest revision; replicas starting together take turns (a
PostgreSQL advisory lock, SQLite's write lock), so none fails on a table another has just
created. An SQLite file is first put in write-ahead-log mode, which it keeps: SQLite refuses
that switch at once, without waiting, while another connection holds a lock (a replica
migrating), so it is tried again until it succeeds (a file already in WAL takes it at once).
A database made by the notifier before migrations existed (tables, no alembic_version) is
recognised and stamped at the initial revision, not created again. A failing revision raises
and rolls back: the database stays as it was.

A change to store/tables.py needs a revision beside it: versions/NNNN_what_changed.py with
`revision = "NNNN"` and `down_revision` the one before, shaped as 0001 is.
tests/test_store_migrations.py fails, on SQLite and PostgreSQL, until the revisions build exactly
the tables the models describe.
"""

import asyncio
import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

INITIAL = "0001"
_SCHEMA_LOCK = 0x706C7477  # "pltw": the advisory lock held while migrating
_WAL_SWITCH_SECONDS = 60.0  # how long another replica's migration may keep SQLite locked
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
    if engine.dialect.name == "sqlite":
        await _write_ahead_log(engine)
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
        elif connection.dialect.name == "sqlite":
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        await connection.run_sync(_upgrade)


async def _write_ahead_log(engine: AsyncEngine) -> None:
    """Put the SQLite file in write-ahead-log mode: a commit is one append and one fsync of the
    log (synchronous=FULL, set per connection, keeps it as durable), and readers no longer
    block the writer. Raises OperationalError if the file stays locked past
    _WAL_SWITCH_SECONDS."""
    deadline = time.monotonic() + _WAL_SWITCH_SECONDS
    pause = 0.01
    while True:
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            return
        except OperationalError as error:
            if "database is locked" not in str(error.orig) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


def _upgrade(connection: Connection) -> None:
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and "escalations" in tables:
        command.stamp(config, INITIAL)  # created by the notifier's create_all, before Alembic
    command.upgrade(config, "head")
