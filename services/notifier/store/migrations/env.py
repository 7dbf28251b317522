"""Alembic's entry point: migrates the connection `migrations.upgrade` hands it, within that
connection's transaction."""

from alembic import context

from services.notifier.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
