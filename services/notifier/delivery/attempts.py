"""Getting one message to one person: dedupe, send with retries, record each step.

Each step is an audit row and a DeliveryEvent on notifier.deliveries.v1. Only `_send_with_retries`
knows the retry policy (exponential backoff with jitter, bounded attempts). If recording a step
fails, `page` raises and the caller tries again later: a message that did not go out is sent then,
one that did is not sent again (its DeliveryEvent may then be missing from Kafka; the audit row is
not).

Messages go out together (`page_many`: the escalator's round), SENDS_AT_ONCE at a time: each
group claimed in one transaction just before it is sent (a claim never waits out its lease in a
queue), then sent concurrently, each through the same steps as alone; the store group-commits
the steps of those in flight. One message failing, or failing to be
recorded, stops none of the others.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from schemas import (
    AckAction,
    AlertKind,
    DeliveryEvent,
    DeliveryStep,
    PlateletAlert,
    stable_event_id,
)
from services.notifier.clock import Clock, utc_now
from services.notifier.delivery.channels.base import (
    Channel,
    DeliveryError,
    FollowsUp,
    HoldsConnections,
)
from services.notifier.domain.message import Message
from services.notifier.store.repository import NotifierStore

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "plateletwatch_notifier_deliveries_total",
    "Message delivery attempts, by channel and outcome.",
    ["channel", "outcome"],
)
DUPLICATES = Counter(
    "plateletwatch_notifier_duplicate_alerts_total",
    "Alert events already paged (redelivery, restart, another replica): not paged again.",
    ["channel"],
)
VERIFIED_TO_PAGE = Histogram(
    "plateletwatch_result_verified_to_first_page_seconds",
    "Seconds from the lab releasing the result to the first page delivered for its alert.",
    ["alert_kind"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
)


@dataclass(frozen=True)
class Recipient:
    """A roster role and how to reach it. The role, never a patient, appears in metrics and logs."""

    role: str
    channel: str
    address: str


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    base_seconds: float

    def delay_before(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt number `attempt` (2, 3, ...)."""
        return random.uniform(0, self.base_seconds * 2 ** (attempt - 2))


@dataclass(frozen=True)
class Page:
    """One rendered message for one recipient about one alert."""

    alert: PlateletAlert
    message: Message
    recipient: Recipient


SENDS_AT_ONCE = 128  # messages one call claims and sends at once: channel connections, store writes

# Publishes a delivery event keyed by patient, like every other PlateletWatch topic.
PublishDelivery = Callable[[str, DeliveryEvent], Awaitable[None]]


class AlertDelivery:
    """Sends one rendered message to one recipient, at most once per (alert, channel, address)."""

    def __init__(
        self,
        store: NotifierStore,
        channels: dict[str, Channel],
        retry: RetryPolicy,
        publish: PublishDelivery,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._channels = channels
        self._retry = retry
        self._publish = publish
        self._clock = clock

    async def page(self, alert: PlateletAlert, message: Message, recipient: Recipient) -> bool:
        """True once the message has reached the recipient, now or before, or is being sent by
        another process (then it is not sent again); False if it could not be delivered, and
        the claim is released for a retry. Raises if a step could not be recorded."""
        (outcome,) = await self.page_many([Page(alert, message, recipient)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def page_many(self, pages: Sequence[Page]) -> list[bool | BaseException]:
        """`page` for many messages, SENDS_AT_ONCE at a time: each group is claimed together
        just before it is sent, concurrently, so no claim waits in a queue while its lease runs
        out (a lapsed claim may be taken and sent by another process). For each message, what
        `page` returns, or the exception that it would raise. One page failing does not stop
        the others."""
        outcomes: list[bool | BaseException] = []
        for start in range(0, len(pages), SENDS_AT_ONCE):
            outcomes += await self._claim_and_send(pages[start : start + SENDS_AT_ONCE])
        return outcomes

    async def _claim_and_send(self, pages: Sequence[Page]) -> list[bool | BaseException]:
        claims = await self._store.claim_pages(
            [(p.alert.alert_id, p.recipient.channel, p.recipient.address) for p in pages],
            self._clock(),
        )

        async def send(page: Page, claimed: bool) -> bool:
            if not claimed:
                DUPLICATES.labels(channel=page.recipient.channel).inc()
                return True
            return await self._send_claimed(page)

        return list(
            await asyncio.gather(
                *(send(page, claimed) for page, claimed in zip(pages, claims, strict=True)),
                return_exceptions=True,
            )
        )

    async def _send_claimed(self, page: Page) -> bool:
        alert, recipient = page.alert, page.recipient
        delivered = False
        try:
            delivered = await self._send_with_retries(alert, page.message, recipient)
        finally:
            if not delivered:
                # Release the claim (also when recording a step failed before the message
                # went out), so the redelivered alert is paged rather than skipped.
                await self._store.finish_page(
                    alert.alert_id,
                    recipient.channel,
                    recipient.address,
                    delivered=False,
                    now=self._clock(),
                )
        return delivered

    async def follow_up(
        self, alert: PlateletAlert, action: AckAction, paged: list[tuple[str, str]]
    ) -> None:
        """Tell the channels that keep incidents (PagerDuty) about an acknowledge or resolve."""
        for channel_name, address in paged:
            channel: object = self._channels.get(channel_name)
            if not isinstance(channel, FollowsUp):
                continue
            try:
                await channel.follow_up(alert.alert_id, address, action)
            except DeliveryError as error:
                log.warning("%s could not be told of %s: %s", channel_name, action.value, error)

    async def close(self) -> None:
        """Close the channels' open connections (the notifier is stopping)."""
        for channel in self._channels.values():
            if isinstance(channel, HoldsConnections):
                await channel.close()

    async def record(
        self, alert: PlateletAlert, step: DeliveryStep, recipient: Recipient, detail: str | None
    ) -> None:
        """An audit row and a delivery event for a step that is not a send (escalated, acked)."""
        await self._step(alert, step, recipient, 1, detail)

    async def _send_with_retries(
        self, alert: PlateletAlert, message: Message, recipient: Recipient
    ) -> bool:
        channel = self._channels.get(recipient.channel)
        if channel is None:
            detail = f"no {recipient.channel} channel is configured"
            await self._step(alert, DeliveryStep.FAILED, recipient, 1, detail)
            return False
        for attempt in range(1, self._retry.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self._retry.delay_before(attempt))
            await self._step(alert, DeliveryStep.SENT, recipient, attempt, None)
            try:
                receipt = await channel.deliver(message, recipient.address)
            except DeliveryError as error:
                DELIVERIES.labels(channel=channel.name, outcome="failed").inc()
                await self._step(alert, DeliveryStep.FAILED, recipient, attempt, str(error))
                log.warning(
                    "message for alert %s via %s failed (attempt %d): %s",
                    alert.alert_id,
                    channel.name,
                    attempt,
                    error,
                )
                if not error.retryable:
                    return False
                continue
            DELIVERIES.labels(channel=channel.name, outcome="delivered").inc()
            # Marked before anything else can fail: a delivered message is never sent again.
            await self._store.finish_page(
                alert.alert_id,
                recipient.channel,
                recipient.address,
                delivered=True,
                now=self._clock(),
            )
            step = (
                DeliveryStep.WITHDRAWN
                if alert.kind is AlertKind.WITHDRAWN
                else DeliveryStep.DELIVERED
            )
            await self._step(alert, step, recipient, attempt, receipt)
            if alert.result_verified_at is not None:
                VERIFIED_TO_PAGE.labels(alert_kind=alert.kind.value).observe(
                    (self._clock() - alert.result_verified_at).total_seconds()
                )
            return True
        return False

    async def _step(
        self,
        alert: PlateletAlert,
        step: DeliveryStep,
        recipient: Recipient,
        attempt: int,
        detail: str | None,
    ) -> None:
        now = self._clock()
        await self._store.record(
            alert.alert_id, step, recipient.channel, recipient.role, attempt, detail, now
        )
        await self._publish(
            alert.patient.identifier.key,
            DeliveryEvent(
                event_id=stable_event_id(
                    "delivery",
                    alert.event_id,
                    step,
                    recipient.channel,
                    recipient.role,
                    str(attempt),
                ),
                alert_id=alert.alert_id,
                step=step,
                channel=recipient.channel,
                recipient=recipient.role,
                attempt=attempt,
                detail=detail,
                occurred_at=now,
            ),
        )
