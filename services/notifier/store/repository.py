"""The notifier's SQL store: which messages went out, the escalation timers, used action links,
console sessions, and the audit trail of every step. It hands back frozen dataclasses, never
ORM rows, so nothing outside this module holds a database session.

SQLite file by default, PostgreSQL by URL. A message is claimed before it is sent: the unique key
(alert_id, channel, address) plus a short lease means that two notifier replicas, or one that
restarted, never both send the same message; a claim abandoned by a crash is retaken after the
lease. Escalation levels are rows with a due time, claimed the same way, so timers survive a
restart and fire once. Each method is one transaction: it happens entirely or not at all.

The writes of the paging path (claims, audit rows, chains, level states) are group-committed:
those issued while a commit is under way wait for it and then share the next transaction, so
pages sent concurrently cost one commit (one fsync on SQLite) per round, not one each. Each
caller still returns only once its write is committed. If a shared transaction fails, its
writes are tried again one transaction each, so one failing write fails only its caller.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    delete,
    distinct,
    event,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy import (
    insert as standard_insert,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from schemas import DeliveryStep
from services.notifier.store.migrations import upgrade
from services.notifier.store.tables import (
    AuditRow,
    Base,
    Closing,
    ClosureRow,
    ConsoleSessionRow,
    EscalationRow,
    LevelState,
    PageRow,
    PageStatus,
    ReassignmentRow,
    UsedLinkRow,
)

CLAIM_LEASE = timedelta(minutes=2)

Write = Callable[[AsyncSession], Awaitable[Any]]


@dataclass(frozen=True)
class Combined:
    """A write that runs as one statement with the others of its `kind` in the same
    transaction: `run_all` gets every such item, in the order they came."""

    kind: str
    item: Any
    run_all: Callable[[AsyncSession, list[Any]], Awaitable[None]]


class GroupCommit:
    """Runs writes in shared transactions: one transaction at a time, each holding every write
    that arrived while the one before committed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: list[tuple[Write | Combined, asyncio.Future[Any]]] = []
        self._committing: asyncio.Task[None] | None = None

    async def run(self, write: Write | Combined) -> Any:
        """What `write` returned, once its transaction has committed; raises what it raised
        (the write is then not committed)."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, done))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_all())
        return await done

    async def _commit_all(self) -> None:
        batch: list[tuple[Write | Combined, asyncio.Future[Any]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._commit(batch)
        except BaseException:  # cancelled (the notifier stopping): nobody waits forever
            for _, done in batch + self._waiting:
                done.cancel()
            self._waiting = []
            raise
        finally:
            self._committing = None

    async def _commit(self, batch: list[tuple[Write | Combined, asyncio.Future[Any]]]) -> None:
        try:
            async with self._sessions.begin() as session:
                results = [await _run(session, write, batch) for write, _ in batch]
        except Exception as error:
            if len(batch) > 1:  # alone, each failing write fails only its caller
                for one in batch:
                    await self._commit([one])
            elif not batch[0][1].done():
                batch[0][1].set_exception(error)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)


async def _run(
    session: AsyncSession,
    write: Write | Combined,
    batch: list[tuple[Write | Combined, asyncio.Future[Any]]],
) -> Any:
    """Run one write of the batch; the first of a Combined kind runs every one of that kind."""
    if not isinstance(write, Combined):
        return await write(session)
    kind = [w for w, _ in batch if isinstance(w, Combined) and w.kind == write.kind]
    if kind[0] is write:
        await write.run_all(session, [w.item for w in kind])
    return None


@dataclass(frozen=True)
class EscalationRecord:
    """One level of an alert's chain; `alert` is the alert event's JSON, which messages render
    from."""

    id: int
    alert_id: str
    level: int
    tier: str
    due_at: datetime
    state: LevelState
    claimed_until: datetime
    alert: str


@dataclass(frozen=True)
class ClosureRecord:
    alert_id: str
    how: Closing
    by: str
    closed_at: datetime


@dataclass(frozen=True)
class AuditRecord:
    id: int
    alert_id: str
    step: DeliveryStep
    channel: str
    recipient: str
    attempt: int
    detail: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class BoardEntry:
    chain: list[EscalationRecord]  # by level; each holds the alert
    closure: ClosureRecord | None
    reassigned_to: str | None


class NotifierStore:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # A failed statement's error names no parameter: they hold alerts, patients included,
        # and the error is logged.
        self._engine: AsyncEngine = create_async_engine(url, hide_parameters=True)
        if url.get_backend_name() == "sqlite":
            event.listen(self._engine.sync_engine, "connect", _synchronous_full)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._writes = GroupCommit(self._sessions)

    async def start(self) -> None:
        """Bring the schema up to date by migration (store/migrations.upgrade): replicas
        starting together take turns; a failed migration raises and the notifier does not
        start."""
        await upgrade(self._engine)

    async def stop(self) -> None:
        await self._engine.dispose()

    async def claim_page(self, alert_id: str, channel: str, address: str, now: datetime) -> bool:
        """True if this process may send the message now; False if it was sent or is being
        sent."""
        return (await self.claim_pages([(alert_id, channel, address)], now))[0]

    async def claim_pages(
        self, messages: Sequence[tuple[str, str, str]], now: datetime
    ) -> list[bool]:
        """`claim_page` for many messages (alert_id, channel, address) in one transaction of
        two statements; a message listed twice is claimed at most once."""
        keys = list(dict.fromkeys(messages))
        if not keys:
            return []

        async def claim(session: AsyncSession) -> set[tuple[str, str, str]]:
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            key_columns = (PageRow.alert_id, PageRow.channel, PageRow.address)
            claims = [
                {
                    "alert_id": alert_id,
                    "channel": channel,
                    "address": address,
                    "status": PageStatus.CLAIMED,
                    "claimed_until": now + CLAIM_LEASE,
                }
                for alert_id, channel, address in keys
            ]
            new = await session.execute(
                insert(PageRow).on_conflict_do_nothing().returning(*key_columns), claims
            )
            claimed = {(a, c, d) for a, c, d in new}
            lapsed = [key for key in keys if key not in claimed]
            if lapsed:
                retaken = await session.execute(
                    update(PageRow)
                    .where(
                        tuple_(*key_columns).in_(lapsed),
                        PageRow.status != PageStatus.DELIVERED,
                        PageRow.claimed_until < now,
                    )
                    .values(claimed_until=now + CLAIM_LEASE)
                    .returning(*key_columns)
                    .execution_options(synchronize_session=False)
                )
                claimed |= {(a, c, d) for a, c, d in retaken}
            return claimed

        claimed: set[tuple[str, str, str]] = await self._writes.run(claim)
        answers = []
        for key in messages:
            answers.append(key in claimed)
            claimed.discard(key)  # listed twice: the second is not sent
        return answers

    async def finish_page(
        self, alert_id: str, channel: str, address: str, *, delivered: bool, now: datetime
    ) -> None:
        """Mark a claimed message delivered, or release the claim so a later attempt may retake
        it. A message once delivered stays delivered: releasing it afterwards changes nothing."""

        finish = _DELIVER_PAGES if delivered else _RELEASE_PAGES
        kind = "pages delivered" if delivered else "pages released"
        await self._writes.run(Combined(kind, ((alert_id, channel, address), now), finish))

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
        """An audit row: one step of one alert's paging."""

        row = {
            "alert_id": alert_id,
            "step": step,
            "channel": channel,
            "recipient": recipient,
            "attempt": attempt,
            "detail": detail,
            "occurred_at": occurred_at,
        }
        await self._writes.run(Combined("audit", row, _insert_audit))

    async def audit_trail(self, alert_id: str) -> list[AuditRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(AuditRow).where(AuditRow.alert_id == alert_id).order_by(AuditRow.id)
            )
            return [_audit(row) for row in rows]

    async def paged_addresses(self, alert_id: str) -> list[tuple[str, str]]:
        """(channel, address) of every message delivered for an alert: whom a withdrawal
        tells."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(PageRow.channel, PageRow.address).where(
                    PageRow.alert_id == alert_id, PageRow.status == PageStatus.DELIVERED
                )
            )
            return [(channel, address) for channel, address in rows]

    async def open_escalation(
        self, alert_id: str, alert_json: str, steps: Sequence[tuple[int, str, datetime]]
    ) -> bool:
        """Store an alert's chain (level, tier, due; at least one); False if it was opened
        before, and then the alert is replaced by this newer version (re-emitted with new
        evidence: the levels still to come message with it, the page shows it)."""
        return (await self.open_escalations([(alert_id, alert_json, steps)]))[0]

    async def open_escalations(
        self, chains: Sequence[tuple[str, str, Sequence[tuple[int, str, datetime]]]]
    ) -> list[bool]:
        """`open_escalation` for many alerts (alert_id, alert JSON, steps), in order, in one
        transaction: the new chains in one statement; an alert opened before (or earlier in
        the list) has its stored alert replaced."""

        async def open_all(session: AsyncSession) -> list[bool]:
            ids = {alert_id for alert_id, _, _ in chains}
            closed = set(
                await session.scalars(
                    select(ClosureRow.alert_id).where(ClosureRow.alert_id.in_(ids))
                )
            )
            opened = set(
                await session.scalars(
                    select(EscalationRow.alert_id).where(EscalationRow.alert_id.in_(ids)).distinct()
                )
            )
            answers, levels, replaced = [], [], {}
            for alert_id, alert_json, steps in chains:
                answers.append(alert_id not in opened)
                if alert_id in opened:
                    replaced[alert_id] = alert_json  # the last version wins
                    continue
                opened.add(alert_id)
                levels += _pending_levels(alert_id, alert_json, steps, alert_id not in closed)
            if levels:
                dialect = session.get_bind().dialect.name
                insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
                # Another replica opening the same alert at this moment: its levels stand.
                await session.execute(insert(EscalationRow).on_conflict_do_nothing(), levels)
            for alert_id, alert_json in replaced.items():
                await session.execute(
                    update(EscalationRow)
                    .where(EscalationRow.alert_id == alert_id)
                    .values(alert=alert_json)
                )
            return answers

        return list(await self._writes.run(open_all))

    async def claim_due_escalations(self, now: datetime) -> list[EscalationRecord]:
        """Pending levels due by `now`, each claimed for a lease so only one process fires it."""

        async def claim(session: AsyncSession) -> list[EscalationRecord]:
            # One statement: a level another process claims meanwhile no longer matches.
            taken = await session.scalars(
                update(EscalationRow)
                .where(
                    EscalationRow.state == LevelState.PENDING,
                    EscalationRow.due_at <= now,
                    EscalationRow.claimed_until <= now,
                )
                .values(claimed_until=now + CLAIM_LEASE)
                .returning(EscalationRow)
                .execution_options(synchronize_session=False)
            )
            return sorted(map(_level, taken), key=lambda level: (level.due_at, level.level))

        return list(await self._writes.run(claim))

    async def finish_escalation_steps(
        self, steps: Sequence[tuple[EscalationRecord, bool]], now: datetime
    ) -> None:
        """Mark fired levels (level, delivered) paged, in one transaction; a level whose message
        was not delivered makes the next level due now rather than waiting out the window."""
        if not steps:
            return

        async def finish(session: AsyncSession) -> None:
            await session.execute(
                update(EscalationRow)
                .where(EscalationRow.id.in_([step.id for step, _ in steps]))
                .values(state=LevelState.PAGED)
                .execution_options(synchronize_session=False)
            )
            for step, delivered in steps:
                if not delivered:
                    await _bring_forward(session, step.alert_id, step.level + 1, now)

        await self._writes.run(finish)

    async def bring_forward(self, alert_id: str, level: int, now: datetime) -> None:
        """Make level `level` due now (the level before failed or was declined)."""
        async with self._sessions.begin() as session:
            await _bring_forward(session, alert_id, level, now)

    async def close(self, alert_id: str, how: Closing, by: str, now: datetime) -> bool:
        """Stop an alert's chain and record how its paging ended; False if it had ended already
        (the first closing counts; the chain is stopped either way)."""
        async with self._sessions.begin() as session:
            await _cancel_pending(session, alert_id)
            await session.execute(
                update(EscalationRow)
                .where(EscalationRow.alert_id == alert_id, EscalationRow.is_open)
                .values(is_open=False)
            )
            closure = {"alert_id": alert_id, "how": how, "by": by, "closed_at": now}
            return await _insert_if_new(session, ClosureRow, closure)

    async def escalation(self, alert_id: str) -> list[EscalationRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(EscalationRow)
                .where(EscalationRow.alert_id == alert_id)
                .order_by(EscalationRow.level)
            )
            return [_level(row) for row in rows]

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
        async with self._sessions.begin() as session:
            await _cancel_pending(session, alert_id)
            chain = list(
                await session.scalars(
                    select(EscalationRow)
                    .where(EscalationRow.alert_id == alert_id)
                    .order_by(EscalationRow.level)
                )
            )
            session.add(
                ReassignmentRow(alert_id=alert_id, population=population, by=by, reassigned_at=now)
            )
            after = chain[-1].level + 1
            numbered = [(after + n, tier, due_at) for n, (tier, due_at) in enumerate(steps)]
            levels = _pending_levels(alert_id, chain[-1].alert, numbered, chain[-1].is_open)
            session.add_all(EscalationRow(**level) for level in levels)

    async def reassigned_to(self, alert_id: str) -> str | None:
        """The service the alert was last handed to, if it was."""
        return (await self.reassignments([alert_id])).get(alert_id)

    async def reassignments(self, alert_ids: Sequence[str]) -> dict[str, str]:
        """The service each of these alerts was last handed to, for those that were: one
        query for a whole round of levels."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(ReassignmentRow.alert_id, ReassignmentRow.population)
                .where(ReassignmentRow.alert_id.in_(set(alert_ids)))
                .order_by(ReassignmentRow.id)
            )
            return {alert_id: population for alert_id, population in rows}  # the last wins

    async def board(self, acknowledged_since: datetime) -> list[BoardEntry]:
        """Alerts still open: not resolved, withdrawn or superseded, and not acknowledged before
        `acknowledged_since`; each with its chain and how it closed, if it did. Read by index:
        the open levels, and the closures since `acknowledged_since`."""
        recently_acknowledged = select(ClosureRow.alert_id).where(
            ClosureRow.closed_at >= acknowledged_since, ClosureRow.how == Closing.ACKNOWLEDGED
        )
        async with self._sessions() as session:
            open_levels = await session.scalars(select(EscalationRow).where(EscalationRow.is_open))
            levels = list(open_levels)
            levels += await session.scalars(
                select(EscalationRow).where(EscalationRow.alert_id.in_(recently_acknowledged))
            )
            chains: dict[str, list[EscalationRecord]] = {}
            for level in sorted(levels, key=lambda row: (row.alert_id, row.level)):
                chains.setdefault(level.alert_id, []).append(_level(level))
            closures = {
                c.alert_id: _closure(c)
                for c in await session.scalars(
                    select(ClosureRow).where(ClosureRow.alert_id.in_(list(chains)))
                )
            }
            handed = {
                r.alert_id: r.population  # in id order: the last hand-over wins
                for r in await session.scalars(
                    select(ReassignmentRow)
                    .where(ReassignmentRow.alert_id.in_(list(chains)))
                    .order_by(ReassignmentRow.id)
                )
            }
        return [
            BoardEntry(chain, closures.get(alert_id), handed.get(alert_id))
            for alert_id, chain in chains.items()
        ]

    async def closure(self, alert_id: str) -> ClosureRecord | None:
        async with self._sessions() as session:
            row = await session.get(ClosureRow, alert_id)
            return None if row is None else _closure(row)

    async def first_delivery_at(self, alert_id: str) -> datetime | None:
        async with self._sessions() as session:
            first = await session.scalar(
                select(func.min(AuditRow.occurred_at)).where(
                    AuditRow.alert_id == alert_id, AuditRow.step == DeliveryStep.DELIVERED
                )
            )
        return None if first is None else as_utc(first)

    async def open_alerts(self) -> tuple[int, int]:
        """(alerts paged and not yet acknowledged, resolved, withdrawn or superseded; of those,
        how many have no level left to page: past their final escalation)."""
        still_pending = select(EscalationRow.alert_id).where(
            EscalationRow.is_open, EscalationRow.state == LevelState.PENDING
        )
        async with self._sessions() as session:
            unacknowledged = await session.scalar(
                select(func.count(distinct(EscalationRow.alert_id))).where(EscalationRow.is_open)
            )
            exhausted = await session.scalar(
                select(func.count(distinct(EscalationRow.alert_id))).where(
                    EscalationRow.is_open, EscalationRow.alert_id.not_in(still_pending)
                )
            )
        return int(unacknowledged or 0), int(exhausted or 0)

    async def link_used(self, nonce: str) -> bool:
        async with self._sessions() as session:
            return await session.get(UsedLinkRow, nonce) is not None

    async def use_link(self, nonce: str, now: datetime) -> bool:
        """True the first time a link's nonce is used; False ever after (a replay)."""
        async with self._sessions.begin() as session:
            return await _insert_if_new(session, UsedLinkRow, {"nonce": nonce, "used_at": now})

    async def open_session(
        self, session_id: str, user: str, expires_at: datetime, now: datetime
    ) -> None:
        """Record a new console session, and forget those expired by `now` (their cookies are
        refused on their expiry anyway)."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now)
            )
            session.add(ConsoleSessionRow(id=session_id, user_name=user, expires_at=expires_at))

    async def session_open(self, session_id: str, user: str) -> bool:
        """True while the session was opened for `user` and not ended."""
        async with self._sessions() as session:
            found = await session.get(ConsoleSessionRow, session_id)
            return found is not None and found.user_name == user

    async def end_session(self, session_id: str) -> None:
        """Sign out: the session's cookie is refused from now on, wherever it is presented."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.id == session_id)
            )


def _synchronous_full(connection: Any, _: object) -> None:
    """Every SQLite commit synced before it returns (a page's claim survives a power cut); the
    file's write-ahead-log mode is set once, by the migration (store/migrations)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


async def _insert_if_new(session: AsyncSession, table: type[Base], *rows: dict[str, Any]) -> bool:
    """Insert the rows within the session's transaction; False, and none inserted, when a
    unique key says the first exists already (ON CONFLICT DO NOTHING: the transaction goes on)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    first, *rest = rows
    inserted = await session.execute(insert(table).values(first).on_conflict_do_nothing())
    if _changed(inserted) != 1:
        return False
    if rest:
        await session.execute(insert(table), rest)
    return True


async def _insert_audit(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(standard_insert(AuditRow), rows)


def _finishing(status: PageStatus) -> Callable[[AsyncSession, list[Any]], Awaitable[None]]:
    """`finish_page` for many messages ((alert_id, channel, address), now) in one statement:
    marked `status` as of the latest of their times."""

    async def finish(
        session: AsyncSession, items: list[tuple[tuple[str, str, str], datetime]]
    ) -> None:
        await session.execute(
            update(PageRow)
            .where(
                tuple_(PageRow.alert_id, PageRow.channel, PageRow.address).in_(
                    [key for key, _ in items]
                ),
                PageRow.status != PageStatus.DELIVERED,
            )
            .values(status=status, claimed_until=max(now for _, now in items))
            .execution_options(synchronize_session=False)
        )

    return finish


_DELIVER_PAGES = _finishing(PageStatus.DELIVERED)
_RELEASE_PAGES = _finishing(PageStatus.FAILED)


async def _cancel_pending(session: AsyncSession, alert_id: str) -> None:
    """Every level of the alert's chain still to page will not page."""
    await session.execute(
        update(EscalationRow)
        .where(EscalationRow.alert_id == alert_id, EscalationRow.state == LevelState.PENDING)
        .values(state=LevelState.CANCELLED)
    )


async def _bring_forward(session: AsyncSession, alert_id: str, level: int, now: datetime) -> None:
    await session.execute(
        update(EscalationRow)
        .where(
            EscalationRow.alert_id == alert_id,
            EscalationRow.level == level,
            EscalationRow.state == LevelState.PENDING,
        )
        .values(due_at=now, claimed_until=now)
    )


def _changed(result: object) -> int:
    return int(getattr(result, "rowcount", 0))


def _pending_levels(
    alert_id: str, alert_json: str, steps: Sequence[tuple[int, str, datetime]], is_open: bool
) -> list[dict[str, Any]]:
    """Rows for chain levels (level, tier, due) still to page, each claimable once due; not
    open when the alert's paging had ended already."""
    return [
        {
            "alert_id": alert_id,
            "level": level,
            "tier": tier,
            "due_at": due_at,
            "state": LevelState.PENDING,
            "claimed_until": due_at,
            "alert": alert_json,
            "is_open": is_open,
        }
        for level, tier, due_at in steps
    ]


def _level(row: EscalationRow) -> EscalationRecord:
    return EscalationRecord(
        row.id,
        row.alert_id,
        row.level,
        row.tier,
        as_utc(row.due_at),
        row.state,
        as_utc(row.claimed_until),
        row.alert,
    )


def _closure(row: ClosureRow) -> ClosureRecord:
    return ClosureRecord(row.alert_id, row.how, row.by, as_utc(row.closed_at))


def _audit(row: AuditRow) -> AuditRecord:
    return AuditRecord(
        row.id,
        row.alert_id,
        row.step,
        row.channel,
        row.recipient,
        row.attempt,
        row.detail,
        as_utc(row.occurred_at),
    )


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back the UTC times it was given without their zone: put it back."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
