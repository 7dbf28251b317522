"""The notifier's tables, and each set of states a row can be in, defined once.

States are Python Enums kept in VARCHAR columns by value ("pending", "paged"...): exactly what
the tables held before the Enums, so a database created earlier reads unchanged. The schema
evolves only by migration (store/migrations); a model changed without one fails the drift test.
"""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, DateTime, Enum, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas import DeliveryStep


class PageStatus(StrEnum):
    """A message to one address: being sent (under a lease), delivered, or failed and free to
    retake. The table keeps its name, pages."""

    CLAIMED = "claimed"
    DELIVERED = "delivered"
    FAILED = "failed"


class LevelState(StrEnum):
    """One level of an escalation chain: still to page, paged, or never to page."""

    PENDING = "pending"
    PAGED = "paged"
    CANCELLED = "cancelled"


class Closing(StrEnum):
    """How an alert's paging ended: by a person (acknowledge, resolve: the link actions' own
    words) or by the classifier (withdrawn, superseded)."""

    ACKNOWLEDGED = "acknowledge"
    RESOLVED = "resolve"
    WITHDRAWN = "withdrawn"
    SUPERSEDED = "superseded"


def _state(states: type[StrEnum]) -> Enum:
    """A column holding one of `states` by value, in VARCHAR(16) without a CHECK constraint."""
    return Enum(
        states,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    pass


class PageRow(Base):
    __tablename__ = "pages"
    __table_args__ = (UniqueConstraint("alert_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(Text)
    status: Mapped[PageStatus] = mapped_column(_state(PageStatus))
    claimed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EscalationRow(Base):
    """One level of an alert's escalation chain: who (a tier) and when, until acknowledged."""

    __tablename__ = "escalations"
    # The due levels are claimed by (state, due_at): pending ones, not every level ever paged.
    __table_args__ = (
        UniqueConstraint("alert_id", "level"),
        Index("ix_escalations_state_due_at", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), index=True)
    level: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    state: Mapped[LevelState] = mapped_column(_state(LevelState))
    claimed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    alert: Mapped[str] = mapped_column(Text)  # the alert event, JSON: messages render from it
    # False once the alert's paging has ended (a closures row): what is open is found by this
    # index, at a cost that grows with the open alerts, not with every chain ever stored.
    is_open: Mapped[bool] = mapped_column(Boolean, index=True)


class ClosureRow(Base):
    """How an alert's paging ended (the first closing counts)."""

    __tablename__ = "closures"

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    how: Mapped[Closing] = mapped_column(_state(Closing))
    by: Mapped[str] = mapped_column(Text)
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ReassignmentRow(Base):
    """ "Not my patient, theirs": the service whose on-call the alert's chain now pages."""

    __tablename__ = "reassignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), index=True)
    population: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(Text)
    reassigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsedLinkRow(Base):
    __tablename__ = "used_links"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsoleSessionRow(Base):
    """A console session that has not been signed out: its cookie counts only while this row
    exists, in every replica and after a restart."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(Text)  # not "user", reserved in PostgreSQL
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[DeliveryStep] = mapped_column(_state(DeliveryStep))
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
