"""The notifier's schema comes from its migrations: on an empty database they build exactly the
tables the models describe, a database made before migrations is stamped rather than rebuilt,
and `plateletwatch db upgrade` runs them. On SQLite and PostgreSQL (`notifier_database_url`)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
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


def _migrate_to(revision: str) -> Callable[[Connection], None]:
    def migrate(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    return migrate


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
    async with engine.begin() as connection:  # as the notifier's create_all made it: 0001
        await connection.run_sync(_migrate_to("0001"))
        await connection.execute(text("DROP TABLE alembic_version"))
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


async def test_a_database_at_0001_upgrades_with_each_alerts_open_state_from_its_closures(
    notifier_database_url: str,
) -> None:
    engine = create_async_engine(notifier_database_url)
    async with engine.begin() as connection:
        await connection.run_sync(_migrate_to("0001"))
        levels = [
            ("paging", 0, "paged"),
            ("paging", 1, "pending"),
            ("exhausted", 0, "paged"),
            ("resolved", 0, "paged"),
            ("resolved", 1, "cancelled"),
            ("acknowledged", 0, "paged"),
        ]
        for alert_id, level, state in levels:
            await connection.execute(
                text(
                    "INSERT INTO escalations (alert_id, level, tier, due_at, state,"
                    " claimed_until, alert) VALUES (:a, :l, 'primary', :at, :s, :at, '{}')"
                ),
                {"a": alert_id, "l": level, "s": state, "at": NOW},
            )
        await connection.execute(
            text(
                "INSERT INTO closures VALUES ('resolved', 'resolve', 'dr.ada', :at),"
                " ('acknowledged', 'acknowledge', 'dr.ada', :at)"
            ),
            {"at": NOW},
        )
    await engine.dispose()
    store = NotifierStore(notifier_database_url)
    await store.start()
    try:
        assert await store.open_alerts() == (2, 1)  # paging and exhausted; exhausted past final
        board = await store.board(acknowledged_since=NOW - timedelta(hours=1))
        on_board = [entry.chain[0].alert_id for entry in board]
        assert on_board == ["acknowledged", "exhausted", "paging"]
        await store.close("paging", Closing.RESOLVED, "dr.ada", NOW)
        assert await store.open_alerts() == (1, 1)
    finally:
        await store.stop()
    drift, revision = await _inspect(notifier_database_url)
    assert (drift, revision) == ([], _head())


def test_db_upgrade_migrates_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "notifier.sqlite3"
    monkeypatch.setenv("PLATELETWATCH_NOTIFIER_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    assert main(["db", "upgrade"]) == 0
    assert "newest revision" in capsys.readouterr().out
    assert database.exists()
