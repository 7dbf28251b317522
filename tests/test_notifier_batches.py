"""Alerts in batches, as the consumer hands over what it fetched: each paged once, again never
(a redelivered batch, a second replica), one refusing recipient holding up nobody else, and the
store's shared transactions failing only the write that failed. Real store (SQLite and
PostgreSQL) and a real loopback webhook receiver."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from schemas import DeliveryEvent
from services.notifier.delivery import attempts
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.store.repository import GroupCommit, NotifierStore
from services.notifier.store.tables import UsedLinkRow
from tests.test_escalator import MINUTE, NOW, critical, escalator, paged


async def test_a_batch_pages_each_alert_once_and_a_redelivered_batch_never_again(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    alerts = [critical(mrn=str(n)) for n in range(20)]
    events: list[DeliveryEvent] = []
    await escalator(store, webhook_receiver, events).receive_many([*alerts, alerts[3]], NOW)
    assert len(webhook_receiver.pages) == 20
    keys = Counter(page.idempotency_key for page in webhook_receiver.pages)
    assert keys == Counter({alert.alert_id: 1 for alert in alerts})
    for alert in alerts:
        trail = [row.step for row in await store.audit_trail(alert.alert_id)]
        assert trail == ["sent", "delivered"]
    await escalator(store, webhook_receiver, events).receive_many(alerts, NOW)  # a restart
    await escalator(store, webhook_receiver, []).receive_many(alerts[::-1], NOW)  # a replica
    assert len(webhook_receiver.pages) == 20
    assert Counter(e.step for e in events) == {"sent": 20, "delivered": 20}


async def test_a_recipient_refusing_one_page_holds_up_no_other_alert(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    alerts = [critical(mrn=str(n)) for n in range(10)]
    webhook_receiver.refuse_next(1, status=400)  # whichever page comes first: not retried
    chain = escalator(store, webhook_receiver, [])
    await chain.receive_many(alerts, NOW)
    assert paged(webhook_receiver) == ["primary"] * 9
    assert await chain.fire_due(NOW + MINUTE) == 1  # undelivered: its next level is due now
    assert paged(webhook_receiver)[-1] == "secondary"
    assert {page.idempotency_key for page in webhook_receiver.pages} == {
        alert.alert_id for alert in alerts
    }


async def test_a_message_listed_twice_in_one_claim_is_claimed_once(store: NotifierStore) -> None:
    message = ("a1", "webhook", "http://x")
    assert await store.claim_pages([message, ("a2", "webhook", "http://x"), message], NOW) == [
        True,
        True,
        False,
    ]


async def test_a_write_failing_in_a_shared_transaction_fails_only_its_caller(
    store: NotifierStore, notifier_database_url: str
) -> None:
    engine = create_async_engine(notifier_database_url)
    writes = GroupCommit(async_sessionmaker(engine, expire_on_commit=False))

    def use(nonce: str) -> Callable[[AsyncSession], Awaitable[None]]:
        async def add(session: AsyncSession) -> None:
            session.add(UsedLinkRow(nonce=nonce, used_at=NOW))

        return add

    async def refuse(_: AsyncSession) -> None:
        raise ValueError("refused")

    try:
        outcomes = await asyncio.gather(
            writes.run(use("first")),
            writes.run(refuse),
            writes.run(use("second")),
            return_exceptions=True,
        )
    finally:
        await engine.dispose()
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)
    assert await store.link_used("first")
    assert await store.link_used("second")


@pytest.mark.parametrize("size", [1, 50])
async def test_each_level_of_a_batch_escalates_on_its_own_time(
    store: NotifierStore, webhook_receiver: WebhookReceiver, size: int
) -> None:
    chain = escalator(store, webhook_receiver, [])
    await chain.receive_many([critical(mrn=str(n)) for n in range(size)], NOW)
    assert await chain.fire_due(NOW + 9 * MINUTE) == 0
    assert await chain.fire_due(NOW + 10 * MINUTE) == size
    assert Counter(paged(webhook_receiver)) == {"primary": size, "secondary": size}


async def test_pages_are_claimed_a_group_at_a_time_just_before_they_are_sent(
    store: NotifierStore, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimed all at once and then queued behind the sends before them, the last pages of a
    big round (a slow gateway: ~47 s a page with retries) outlived their two-minute claim, and
    another process could take the claim and page the same doctor again."""
    monkeypatch.setattr(attempts, "SENDS_AT_ONCE", 4)
    claimed: list[tuple[int, int]] = []  # (messages claimed, pages received before the claim)
    claim_pages = store.claim_pages

    async def claim_and_note(messages: list[tuple[str, str, str]], now: datetime) -> list[bool]:
        claimed.append((len(messages), len(webhook_receiver.pages)))
        return await claim_pages(messages, now)

    monkeypatch.setattr(store, "claim_pages", claim_and_note)
    alerts = [critical(mrn=str(n)) for n in range(10)]
    await escalator(store, webhook_receiver, []).receive_many(alerts, NOW)
    assert claimed == [(4, 0), (4, 4), (2, 8)]
    assert len(webhook_receiver.pages) == 10
