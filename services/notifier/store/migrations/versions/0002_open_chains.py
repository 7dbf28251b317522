"""Each escalation level says whether its alert's paging is still open, and closures are indexed by
time, and levels by state and due time: the open alerts, the board and the due levels are read
by index, not by scanning every chain ever stored.
Levels already stored are open unless their alert has a closure.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "escalations",
        sa.Column("is_open", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.execute(
        "UPDATE escalations SET is_open = false WHERE alert_id IN (SELECT alert_id FROM closures)"
    )
    op.create_index("ix_escalations_is_open", "escalations", ["is_open"])
    op.create_index("ix_closures_closed_at", "closures", ["closed_at"])
    op.create_index("ix_escalations_state_due_at", "escalations", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_escalations_state_due_at", "escalations")
    op.drop_index("ix_closures_closed_at", "closures")
    op.drop_index("ix_escalations_is_open", "escalations")
    with op.batch_alter_table("escalations") as batch:
        batch.drop_column("is_open")
