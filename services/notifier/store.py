"""The notifier's SQL store: which pages went out, and the audit trail of every step.

SQLite file by default, PostgreSQL by URL. A page is claimed before it is sent: the unique key
(alert_id, channel, address) plus a short lease means that two notifier replicas, or one
that restarted, never both send the same page; a claim abandoned by a crash is retaken after the
lease.
"""

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas import DeliveryStep

CLAIM_LEASE = timedelta(minutes=2)


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


_DELIVERED = "delivered"


class NotifierStore:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self._engine: AsyncEngine = create_async_engine(url)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def start(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(_Base.metadata.create_all)

    async def stop(self) -> None:
        await self._engine.dispose()

    async def claim_page(self, alert_id: str, channel: str, address: str, now: datetime) -> bool:
        """True if this process may send the page now; False if it was sent or is being sent."""
        async with self._sessions() as session:
            session.add(
                PageRecord(
                    alert_id=alert_id,
                    channel=channel,
                    address=address,
                    status="claimed",
                    claimed_until=now + CLAIM_LEASE,
                )
            )
            try:
                await session.commit()
                return True
            except IntegrityError:
                await session.rollback()
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
