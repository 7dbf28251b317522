"""The notifier's schema comes from its migrations: on an empty database they build exactly the
tables the models describe, a database made before migrations is stamped rather than rebuilt,
and `plateletwatch db upgrade` runs them. On SQLite and PostgreSQL (`notifier_database_url`)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.cli import main
from services.notifier.store.migrations import alembic_config
from services.notifier.store.repository import NotifierStore
from services.notifier.store.tables import Base, Closing

NOW = datetime(2026, 11, 28, 3, 10, tzinfo=UTC)


def _drift_and_revision(connection: Connection) -> tuple[list[Any], str | None]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata), context.get_current_revision()


async def _inspect(url: str) -> tuple[list[Any], str | None]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_drift_and_revision)
    finally:
        await engine.dispose()


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_migrating_an_empty_database_builds_exactly_the_models(
    notifier_database_url: str,
) -> None:
    store = NotifierStore(notifier_database_url)
    await store.start()
    await store.start()  # a restart finds nothing to do
    await store.stop()
    drift, revision = await _inspect(notifier_database_url)
    assert drift == []
    assert revision == _head()


async def test_a_database_made_before_migrations_is_stamped_and_keeps_its_rows(
    notifier_database_url: str,
) -> None:
    engine = create_async_engine(notifier_database_url)
    async with engine.begin() as connection:  # as the notifier's create_all made it
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(
            text("INSERT INTO closures VALUES ('a1', 'acknowledge', 'dr.ada', :at)"),
            {"at": NOW},
        )
    await engine.dispose()
    store = NotifierStore(notifier_database_url)
    await store.start()
    closure = await store.closure("a1")
    await store.stop()
    assert closure is not None
    assert (closure.how, closure.by, closure.closed_at) == (Closing.ACKNOWLEDGED, "dr.ada", NOW)
    drift, revision = await _inspect(notifier_database_url)
    assert drift == []
    assert revision == _head()


def test_db_upgrade_migrates_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "notifier.sqlite3"
    monkeypatch.setenv("PLATELETWATCH_NOTIFIER_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    assert main(["db", "upgrade"]) == 0
    assert "newest revision" in capsys.readouterr().out
    assert database.exists()
