"""Durable producers: every write waits for acks=all before the caller may acknowledge its sender.

Idempotent producers are preferred (no duplicates on internal retries). Brokers without
InitProducerId support (Tansu with memory storage) get an explicit, logged fallback to acks=all
without idempotence; downstream dedupe on `event_id` then covers the rare retry duplicate.

Two kinds of failure are kept apart, because senders must react differently: an event Kafka
refuses for its size (EventTooLargeError, permanent: resending cannot help) and a broker that
does not answer (KafkaError or TimeoutError: resend later).
"""

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from prometheus_client import Histogram
from pydantic import BaseModel

log = logging.getLogger(__name__)

# How often the broker is asked for its metadata to tell readiness, and how long it may take.
BROKER_CHECK_INTERVAL_SECONDS = 2.0
BROKER_CHECK_TIMEOUT_SECONDS = 2.0

_fallback_logged = False

PRODUCE_SECONDS = Histogram(
    "plateletwatch_kafka_produce_seconds",
    "Time from handing an event to Kafka until the broker acknowledged it (acks=all).",
    ["topic"],
)


def _log_fallback_once(bootstrap_servers: str, error: Exception) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        log.warning(
            "broker %s refused an idempotent producer (%s: %s); using acks=all without "
            "idempotence: consumers dedupe on event_id",
            bootstrap_servers,
            type(error).__name__,
            error,
        )


async def start_durable_producer(
    bootstrap_servers: str, client_id: str, timeout_seconds: float, batch_bytes: int = 16_384
) -> AIOKafkaProducer:
    """Start a producer with acks=all, idempotent where the broker supports it; `batch_bytes`
    bounds one partition's record batch (a single larger record still goes, alone)."""
    common = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "request_timeout_ms": int(timeout_seconds * 1000),
        "linger_ms": 0,  # senders wait for each ACK: batching delay would only add latency
        "max_batch_size": batch_bytes,
    }
    producer = AIOKafkaProducer(enable_idempotence=True, **common)
    try:
        await producer.start()
        return producer
    except KafkaError as error:
        await producer.stop()
        _log_fallback_once(bootstrap_servers, error)
    producer = AIOKafkaProducer(enable_idempotence=False, **common)
    await producer.start()
    return producer


class EventTooLargeError(Exception):
    """Kafka refused one event for its size (the producer's max_request_size or the broker's
    message.max.bytes). Permanent: the same event would be refused again, so its sender must be
    told so (HTTP 413, HL7 AE), not asked to retry."""

    def __init__(self, size: int) -> None:
        super().__init__(f"event of {size} bytes is larger than Kafka accepts")
        self.size = size


class EventPublisher:
    """Publishes events keyed by patient and returns only once Kafka holds them (acks=all).

    Raises KafkaError, or TimeoutError after `timeout_seconds`, when the write is not
    acknowledged: callers must then refuse their sender (HTTP 503, HL7 AR), never acknowledge.
    A write that timed out may still land later; its stable event_id makes that harmless.
    Raises EventTooLargeError when Kafka refuses the event for its size.

    While started, the broker is asked for its metadata every few seconds: `broker_reachable`
    says whether the last answer came, for readiness probes.
    """

    def __init__(self, bootstrap_servers: str, client_id: str, timeout_seconds: float) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._timeout_seconds = timeout_seconds
        self._producer: AIOKafkaProducer | None = None
        self._watch: asyncio.Task[None] | None = None
        self._broker_reachable = False

    @property
    def started(self) -> bool:
        return self._producer is not None

    @property
    def broker_reachable(self) -> bool:
        """Started, and the broker answered the latest metadata request."""
        return self._producer is not None and self._broker_reachable

    async def start(self) -> None:
        self._producer = await start_durable_producer(
            self._bootstrap_servers, self._client_id, self._timeout_seconds
        )
        self._broker_reachable = True
        self._watch = asyncio.create_task(self._watch_broker(self._producer))

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _watch_broker(self, producer: AIOKafkaProducer) -> None:
        while True:
            await asyncio.sleep(BROKER_CHECK_INTERVAL_SECONDS)
            try:
                await asyncio.wait_for(
                    producer.client.fetch_all_metadata(), BROKER_CHECK_TIMEOUT_SECONDS
                )
            except (KafkaError, TimeoutError, OSError):
                self._broker_reachable = False
            else:
                self._broker_reachable = True

    async def publish(
        self,
        topic: str,
        key: str | None,
        event: BaseModel,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._producer is None:
            raise KafkaConnectionError("publisher is not started")
        value = event.model_dump_json().encode()
        started = time.perf_counter()
        try:
            # aiokafka can wait past its request timeout while no broker is reachable; the
            # caller must get an answer in bounded time to refuse its sender.
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topic,
                    value=value,
                    key=key.encode() if key is not None else None,
                    headers=[(name, text.encode()) for name, text in (headers or {}).items()],
                ),
                self._timeout_seconds,
            )
        except (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError) as error:
            raise EventTooLargeError(len(value)) from error
        finally:
            PRODUCE_SECONDS.labels(topic=topic).observe(time.perf_counter() - started)
