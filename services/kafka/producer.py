"""Durable producers: every write waits for acks=all before the caller may acknowledge its sender.

Idempotent producers are preferred (no duplicates on internal retries). Brokers without
InitProducerId support (Tansu with memory storage) get an explicit, logged fallback to acks=all
without idempotence; downstream dedupe on `event_id` then covers the rare retry duplicate.
"""

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Histogram
from pydantic import BaseModel

log = logging.getLogger(__name__)

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
    bootstrap_servers: str, client_id: str, timeout_seconds: float
) -> AIOKafkaProducer:
    """Start a producer with acks=all, idempotent where the broker supports it."""
    common = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "request_timeout_ms": int(timeout_seconds * 1000),
        "linger_ms": 0,  # senders wait for each ACK: batching delay would only add latency
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


class EventPublisher:
    """Publishes events keyed by patient and returns only once Kafka holds them (acks=all).

    Raises KafkaError, or TimeoutError after `timeout_seconds`, when the write is not
    acknowledged: callers must then refuse their sender (HTTP 503, HL7 AE), never acknowledge.
    A write that timed out may still land later; its stable event_id makes that harmless.
    """

    def __init__(self, bootstrap_servers: str, client_id: str, timeout_seconds: float) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._timeout_seconds = timeout_seconds
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._producer = await start_durable_producer(
            self._bootstrap_servers, self._client_id, self._timeout_seconds
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, key: str | None, event: BaseModel) -> None:
        if self._producer is None:
            raise KafkaConnectionError("publisher is not started")
        started = time.perf_counter()
        try:
            # aiokafka can wait past its request timeout while no broker is reachable; the
            # caller must get an answer in bounded time to refuse its sender.
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topic,
                    value=event.model_dump_json().encode(),
                    key=key.encode() if key is not None else None,
                ),
                self._timeout_seconds,
            )
        finally:
            PRODUCE_SECONDS.labels(topic=topic).observe(time.perf_counter() - started)
