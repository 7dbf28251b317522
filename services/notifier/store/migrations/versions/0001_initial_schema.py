"""The notifier's schema as its create_all made it before migrations: databases from then are
stamped at this revision rather than created again.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claimed_until", _WHEN, nullable=False),
        sa.UniqueConstraint("alert_id", "channel", "address"),
    )
    op.create_table(
        "escalations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("due_at", _WHEN, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_until", _WHEN, nullable=False),
        sa.Column("alert", sa.Text(), nullable=False),
        sa.UniqueConstraint("alert_id", "level"),
    )
    op.create_index("ix_escalations_alert_id", "escalations", ["alert_id"])
    op.create_index("ix_escalations_due_at", "escalations", ["due_at"])
    op.create_table(
        "closures",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("how", sa.String(16), nullable=False),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("closed_at", _WHEN, nullable=False),
    )
    op.create_table(
        "reassignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("population", sa.String(16), nullable=False),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("reassigned_at", _WHEN, nullable=False),
    )
    op.create_index("ix_reassignments_alert_id", "reassignments", ["alert_id"])
    op.create_table(
        "used_links",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("used_at", _WHEN, nullable=False),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", _WHEN, nullable=False),
    )
    op.create_index("ix_audit_alert_id", "audit", ["alert_id"])


def downgrade() -> None:
    for table in (
        "audit",
        "console_sessions",
        "used_links",
        "reassignments",
        "closures",
        "escalations",
        "pages",
    ):
        op.drop_table(table)
