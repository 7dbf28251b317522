"""The notifier process: consume platelet.alerts.v1, page, and serve its HTTP API.

Offsets are committed only after an alert has been handled, so an alert is never skipped; a
redelivered alert is recognised by the store and not paged twice.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from prometheus_client import Counter
from pydantic import ValidationError

from schemas import DeliveryEvent, PlateletAlert, Topic
from services.config import Settings
from services.kafka.producer import EventPublisher
from services.notifier.channels.base import Channel
from services.notifier.channels.webhook import WebhookChannel
from services.notifier.delivery import AlertDelivery, Recipient, RetryPolicy
from services.notifier.store import NotifierStore
from services.web import operations_router

log = logging.getLogger(__name__)

ALERTS_CONSUMED = Counter(
    "plateletwatch_notifier_alerts_consumed_total",
    "Alert events read from platelet.alerts.v1, by outcome.",
    ["outcome"],
)
_RETRY_AFTER_FAILURE_SECONDS = 5.0


def recipients_from(settings: Settings) -> list[Recipient]:
    """Until the on-call roster exists, every alert goes to one configured webhook."""
    if settings.notifier_webhook_url is None:
        return []
    return [Recipient("hematology-on-call", "webhook", str(settings.notifier_webhook_url))]


class AlertConsumer:
    def __init__(self, settings: Settings, bootstrap_servers: str, delivery: AlertDelivery) -> None:
        self._settings = settings
        self._bootstrap_servers = bootstrap_servers
        self._delivery = delivery
        self.ready = False

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self._settings.topic(Topic.PLATELET_ALERTS),
            bootstrap_servers=self._bootstrap_servers,
            group_id=self._settings.group_id("notifier"),
            client_id="plateletwatch-notifier",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self.ready = True
        try:
            async for message in consumer:
                partition = TopicPartition(message.topic, message.partition)
                while not await self._handle(message.value):  # noqa: ASYNC110 - a timed retry
                    await asyncio.sleep(_RETRY_AFTER_FAILURE_SECONDS)
                await consumer.commit({partition: message.offset + 1})
        finally:
            self.ready = False
            await consumer.stop()

    async def _handle(self, raw: bytes | None) -> bool:
        """Handle one alert; False means a transient failure and the same alert is tried again."""
        try:
            alert = PlateletAlert.model_validate_json(raw or b"")
        except ValidationError as error:
            ALERTS_CONSUMED.labels(outcome="undecodable").inc()
            log.error("skipping an undecodable alert event: %d errors", error.error_count())
            return True
        try:
            await self._delivery.handle(alert)
        except Exception:
            ALERTS_CONSUMED.labels(outcome="retrying").inc()
            log.exception("handling alert %s failed; retrying", alert.alert_id)
            return False
        ALERTS_CONSUMED.labels(outcome="handled").inc()
        return True


def _stop_process_if_failed(task: "asyncio.Task[None]") -> None:
    """A notifier that cannot consume alerts must not look alive: stop, so it is restarted."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("alert consumer stopped: %r; shutting the notifier down", task.exception())
        os.kill(os.getpid(), signal.SIGTERM)


def create_app(settings: Settings, bootstrap_servers: str) -> FastAPI:
    store = NotifierStore(settings.notifier_database_url)
    publisher = EventPublisher(
        bootstrap_servers, "plateletwatch-notifier", settings.kafka_produce_timeout_seconds
    )
    channels: dict[str, Channel] = {
        "webhook": WebhookChannel(settings.notifier_webhook_timeout_seconds)
    }

    async def publish_delivery(patient_key: str, event: DeliveryEvent) -> None:
        await publisher.publish(settings.topic(Topic.NOTIFIER_DELIVERIES), patient_key, event)

    delivery = AlertDelivery(
        store,
        channels,
        recipients_from(settings),
        RetryPolicy(settings.notifier_delivery_attempts, settings.notifier_retry_base_seconds),
        publish_delivery,
    )
    consumer = AlertConsumer(settings, bootstrap_servers, delivery)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.start()
        await publisher.start()
        task = asyncio.create_task(consumer.run(), name="alert-consumer")
        task.add_done_callback(_stop_process_if_failed)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await publisher.stop()
            await store.stop()

    app = FastAPI(title="PlateletWatch notifier", lifespan=lifespan)
    app.include_router(operations_router("notifier", lambda: consumer.ready))
    return app
