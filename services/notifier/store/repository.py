"""The notifier's SQL store: which pages went out, the escalation timers, used action links, and
the audit trail of every step.

SQLite file by default, PostgreSQL by URL. A page is claimed before it is sent: the unique key
(alert_id, channel, address) plus a short lease means that two notifier replicas, or one
that restarted, never both send the same page; a claim abandoned by a crash is retaken after the
lease. Escalation steps are rows with a due time, claimed the same way, so timers survive a
restart and fire once.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    distinct,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas import DeliveryStep

CLAIM_LEASE = timedelta(minutes=2)
_SCHEMA_LOCK = 0x706C7477  # "pltw": the advisory lock held while creating tables


class _Base(DeclarativeBase):
    pass


class PageRecord(_Base):
    __tablename__ = "pages"
    __table_args__ = (UniqueConstraint("alert_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    claimed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EscalationRecord(_Base):
    """One level of an alert's escalation chain: who (a tier) and when, until acknowledged."""

    __tablename__ = "escalations"
    __table_args__ = (UniqueConstraint("alert_id", "level"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), index=True)
    level: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    state: Mapped[str] = mapped_column(String(16))  # pending, paged, cancelled
    claimed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    alert: Mapped[str] = mapped_column(Text)  # the alert event, JSON: pages render from it


class ClosureRecord(_Base):
    """How an alert's paging ended: acknowledged, resolved, withdrawn or superseded (the first
    one counts)."""

    __tablename__ = "closures"

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    how: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(Text)
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReassignmentRecord(_Base):
    """ "Not my patient, theirs": the service whose on-call the alert's chain now pages."""

    __tablename__ = "reassignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), index=True)
    population: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(Text)
    reassigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsedLinkRecord(_Base):
    __tablename__ = "used_links"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsoleSessionRecord(_Base):
    """A console session that has not been signed out: its cookie counts only while this row
    exists, in every replica and after a restart."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(Text)  # not "user", reserved in PostgreSQL
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditRecord(_Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class BoardEntry:
    chain: list[EscalationRecord]  # by level; each row holds the alert
    closure: ClosureRecord | None
    reassigned_to: str | None


_DELIVERED = "delivered"
PENDING, PAGED, CANCELLED = "pending", "paged", "cancelled"
WITHDRAWN, SUPERSEDED = "withdrawn", "superseded"  # how the classifier closes a paging


class NotifierStore:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self._engine: AsyncEngine = create_async_engine(url)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def start(self) -> None:
        """Create the tables that do not exist yet.

        Replicas starting together on an empty database take turns (a PostgreSQL advisory lock,
        SQLite's write lock), so none fails on a table another has just created.
        """
        async with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            elif connection.dialect.name == "sqlite":
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            await connection.run_sync(_Base.metadata.create_all)

    async def stop(self) -> None:
        await self._engine.dispose()

    async def claim_page(self, alert_id: str, channel: str, address: str, now: datetime) -> bool:
        """True if this process may send the page now; False if it was sent or is being sent."""
        claim = PageRecord(
            alert_id=alert_id,
            channel=channel,
            address=address,
            status="claimed",
            claimed_until=now + CLAIM_LEASE,
        )
        if await self._insert_new(claim):
            return True
        async with self._sessions() as session:
            retaken = await session.execute(
                update(PageRecord)
                .where(
                    PageRecord.alert_id == alert_id,
                    PageRecord.channel == channel,
                    PageRecord.address == address,
                    PageRecord.status != _DELIVERED,
                    PageRecord.claimed_until < now,
                )
                .values(claimed_until=now + CLAIM_LEASE)
            )
            await session.commit()
            return bool(getattr(retaken, "rowcount", 0) == 1)

    async def finish_page(
        self, alert_id: str, channel: str, address: str, *, delivered: bool, now: datetime
    ) -> None:
        """Mark a claimed page delivered, or release the claim so a later attempt may retake it.

        A page once delivered stays delivered: releasing it afterwards changes nothing.
        """
        async with self._sessions() as session:
            await session.execute(
                update(PageRecord)
                .where(
                    PageRecord.alert_id == alert_id,
                    PageRecord.channel == channel,
                    PageRecord.address == address,
                    PageRecord.status != _DELIVERED,
                )
                .values(status=_DELIVERED if delivered else "failed", claimed_until=now)
            )
            await session.commit()

    async def record(
        self,
        alert_id: str,
        step: DeliveryStep,
        channel: str,
        recipient: str,
        attempt: int,
        detail: str | None,
        occurred_at: datetime,
    ) -> None:
        async with self._sessions() as session:
            session.add(
                AuditRecord(
                    alert_id=alert_id,
                    step=step.value,
                    channel=channel,
                    recipient=recipient,
                    attempt=attempt,
                    detail=detail,
                    occurred_at=occurred_at,
                )
            )
            await session.commit()

    async def audit_trail(self, alert_id: str) -> list[AuditRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(AuditRecord).where(AuditRecord.alert_id == alert_id).order_by(AuditRecord.id)
            )
            return list(rows)

    async def paged_addresses(self, alert_id: str) -> list[tuple[str, str]]:
        """(channel, address) of every page delivered for an alert: whom a withdrawal tells."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(PageRecord.channel, PageRecord.address).where(
                    PageRecord.alert_id == alert_id, PageRecord.status == _DELIVERED
                )
            )
            return [(channel, address) for channel, address in rows]

    async def open_escalation(
        self, alert_id: str, alert_json: str, steps: Sequence[tuple[int, str, datetime]]
    ) -> bool:
        """Store an alert's chain (level, tier, due); False if it was opened before."""
        return await self._insert_new(*_pending_levels(alert_id, alert_json, steps))

    async def update_alert(self, alert_id: str, alert_json: str) -> None:
        """Keep the alert's newest version: later levels page with it, its page shows it."""
        async with self._sessions() as session:
            await session.execute(
                update(EscalationRecord)
                .where(EscalationRecord.alert_id == alert_id)
                .values(alert=alert_json)
            )
            await session.commit()

    async def claim_due_escalations(self, now: datetime) -> list[EscalationRecord]:
        """Pending steps due by `now`, each claimed for a lease so only one process fires it."""
        async with self._sessions() as session:
            due = await session.scalars(
                select(EscalationRecord)
                .where(
                    EscalationRecord.state == PENDING,
                    EscalationRecord.due_at <= now,
                    EscalationRecord.claimed_until <= now,
                )
                .order_by(EscalationRecord.due_at, EscalationRecord.level)
            )
            claimed = []
            for step in due:
                taken = await session.execute(
                    update(EscalationRecord)
                    .where(
                        EscalationRecord.id == step.id,
                        EscalationRecord.state == PENDING,
                        EscalationRecord.claimed_until == step.claimed_until,
                    )
                    .values(claimed_until=now + CLAIM_LEASE)
                )
                if getattr(taken, "rowcount", 0) == 1:
                    claimed.append(step)
            await session.commit()
            return claimed

    async def finish_escalation_step(self, step_id: int) -> None:
        await self._set_state(EscalationRecord.id == step_id, PAGED)

    async def bring_forward(self, alert_id: str, level: int, now: datetime) -> None:
        """Make level `level` due now (the level before failed or was declined)."""
        async with self._sessions() as session:
            await session.execute(
                update(EscalationRecord)
                .where(
                    EscalationRecord.alert_id == alert_id,
                    EscalationRecord.level == level,
                    EscalationRecord.state == PENDING,
                )
                .values(due_at=now, claimed_until=now)
            )
            await session.commit()

    async def cancel_escalation(self, alert_id: str) -> int:
        """Stop an alert's chain; the number of steps that will now never fire."""
        return await self._set_state(
            (EscalationRecord.alert_id == alert_id) & (EscalationRecord.state == PENDING),
            CANCELLED,
        )

    async def escalation(self, alert_id: str) -> list[EscalationRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(EscalationRecord)
                .where(EscalationRecord.alert_id == alert_id)
                .order_by(EscalationRecord.level)
            )
            return list(rows)

    async def reassign(
        self,
        alert_id: str,
        population: str,
        by: str,
        steps: Sequence[tuple[str, datetime]],
        now: datetime,
    ) -> None:
        """Hand an alert's chain to another service: what was still to page is cancelled and
        a new chain (tier, due) follows the levels already paged."""
        async with self._sessions() as session:
            await session.execute(
                update(EscalationRecord)
                .where(EscalationRecord.alert_id == alert_id, EscalationRecord.state == PENDING)
                .values(state=CANCELLED)
            )
            chain = list(
                await session.scalars(
                    select(EscalationRecord)
                    .where(EscalationRecord.alert_id == alert_id)
                    .order_by(EscalationRecord.level)
                )
            )
            session.add(
                ReassignmentRecord(
                    alert_id=alert_id, population=population, by=by, reassigned_at=now
                )
            )
            after = chain[-1].level + 1
            numbered = [(after + n, tier, due_at) for n, (tier, due_at) in enumerate(steps)]
            session.add_all(_pending_levels(alert_id, chain[-1].alert, numbered))
            await session.commit()

    async def reassigned_to(self, alert_id: str) -> str | None:
        """The service the alert was last handed to, if it was."""
        async with self._sessions() as session:
            return await session.scalar(
                select(ReassignmentRecord.population)
                .where(ReassignmentRecord.alert_id == alert_id)
                .order_by(ReassignmentRecord.id.desc())
                .limit(1)
            )

    async def board(self, acknowledged_since: datetime) -> list["BoardEntry"]:
        """Alerts still open: not resolved, withdrawn or superseded, and not acknowledged before
        `acknowledged_since`; each with its chain and how it closed, if it did."""
        finished = select(ClosureRecord.alert_id).where(
            (ClosureRecord.how != "acknowledge") | (ClosureRecord.closed_at < acknowledged_since)
        )
        async with self._sessions() as session:
            levels = await session.scalars(
                select(EscalationRecord)
                .where(EscalationRecord.alert_id.not_in(finished))
                .order_by(EscalationRecord.alert_id, EscalationRecord.level)
            )
            chains: dict[str, list[EscalationRecord]] = {}
            for level in levels:
                chains.setdefault(level.alert_id, []).append(level)
            closures = {
                c.alert_id: c
                for c in await session.scalars(
                    select(ClosureRecord).where(ClosureRecord.alert_id.in_(list(chains)))
                )
            }
            handed = {
                r.alert_id: r.population  # in id order: the last hand-over wins
                for r in await session.scalars(
                    select(ReassignmentRecord)
                    .where(ReassignmentRecord.alert_id.in_(list(chains)))
                    .order_by(ReassignmentRecord.id)
                )
            }
        return [
            BoardEntry(chain, closures.get(alert_id), handed.get(alert_id))
            for alert_id, chain in chains.items()
        ]

    async def closure(self, alert_id: str) -> ClosureRecord | None:
        async with self._sessions() as session:
            return await session.get(ClosureRecord, alert_id)

    async def close_alert(self, alert_id: str, how: str, by: str, now: datetime) -> bool:
        """Record how an alert's paging ended; False if it had ended already."""
        return await self._insert_new(
            ClosureRecord(alert_id=alert_id, how=how, by=by, closed_at=now)
        )

    async def first_delivery_at(self, alert_id: str) -> datetime | None:
        async with self._sessions() as session:
            first = await session.scalar(
                select(func.min(AuditRecord.occurred_at)).where(
                    AuditRecord.alert_id == alert_id, AuditRecord.step == _DELIVERED
                )
            )
        return None if first is None else as_utc(first)

    async def open_alerts(self) -> tuple[int, int]:
        """(alerts paged and not yet acknowledged, resolved, withdrawn or superseded; of those,
        how many have no level left to page: past their final escalation)."""
        open_ids = select(EscalationRecord.alert_id).where(
            EscalationRecord.alert_id.not_in(select(ClosureRecord.alert_id))
        )
        still_pending = select(EscalationRecord.alert_id).where(EscalationRecord.state == PENDING)
        async with self._sessions() as session:
            unacknowledged = await session.scalar(
                select(func.count(distinct(EscalationRecord.alert_id))).where(
                    EscalationRecord.alert_id.in_(open_ids)
                )
            )
            exhausted = await session.scalar(
                select(func.count(distinct(EscalationRecord.alert_id))).where(
                    EscalationRecord.alert_id.in_(open_ids),
                    EscalationRecord.alert_id.not_in(still_pending),
                )
            )
        return int(unacknowledged or 0), int(exhausted or 0)

    async def link_used(self, nonce: str) -> bool:
        async with self._sessions() as session:
            return await session.get(UsedLinkRecord, nonce) is not None

    async def use_link(self, nonce: str, now: datetime) -> bool:
        """True the first time a link's nonce is used; False ever after (a replay)."""
        return await self._insert_new(UsedLinkRecord(nonce=nonce, used_at=now))

    async def open_session(
        self, session_id: str, user: str, expires_at: datetime, now: datetime
    ) -> None:
        """Record a new console session, and forget those expired by `now` (their cookies are
        refused on their expiry anyway)."""
        async with self._sessions() as session:
            await session.execute(
                delete(ConsoleSessionRecord).where(ConsoleSessionRecord.expires_at <= now)
            )
            session.add(ConsoleSessionRecord(id=session_id, user_name=user, expires_at=expires_at))
            await session.commit()

    async def session_open(self, session_id: str, user: str) -> bool:
        """True while the session was opened for `user` and not ended."""
        async with self._sessions() as session:
            found = await session.get(ConsoleSessionRecord, session_id)
            return found is not None and found.user_name == user

    async def end_session(self, session_id: str) -> None:
        """Sign out: the session's cookie is refused from now on, wherever it is presented."""
        async with self._sessions() as session:
            await session.execute(
                delete(ConsoleSessionRecord).where(ConsoleSessionRecord.id == session_id)
            )
            await session.commit()

    async def _insert_new(self, *records: _Base) -> bool:
        """Insert the records together; False when a unique key says they exist already."""
        async with self._sessions() as session:
            session.add_all(records)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return False
            return True

    async def _set_state(self, where: ColumnElement[bool], state: str) -> int:
        async with self._sessions() as session:
            changed = await session.execute(
                update(EscalationRecord).where(where).values(state=state)
            )
            await session.commit()
            return int(getattr(changed, "rowcount", 0))


def _pending_levels(
    alert_id: str, alert_json: str, steps: Sequence[tuple[int, str, datetime]]
) -> list[EscalationRecord]:
    """Rows for chain levels (level, tier, due) still to page, each claimable once due."""
    return [
        EscalationRecord(
            alert_id=alert_id,
            level=level,
            tier=tier,
            due_at=due_at,
            state=PENDING,
            claimed_until=due_at,
            alert=alert_json,
        )
        for level, tier, due_at in steps
    ]


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back the UTC times it was given without their zone: put it back."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
