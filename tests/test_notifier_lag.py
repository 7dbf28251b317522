"""The notifier's consumer lag is the broker's: log-end offset minus the group's committed offset,
so it keeps growing while the consumer is stuck on an alert it has read but not handled (the
high-water mark of its last fetch said otherwise)."""

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from schemas import Topic
from services.kafka.lag import consumer_lag, partition_lag
from services.notifier.app import watch_lag
from tests.alert_factory import persistent_severe
from tests.conftest import Kafka


def test_lag_runs_from_the_committed_offset_or_the_log_start_to_the_log_end() -> None:
    first, second = TopicPartition("alerts", 0), TopicPartition("alerts", 1)
    end = {first: 10, second: 7}
    lag = partition_lag(end, {first: 4, second: None}, {first: 0, second: 2})
    assert lag == {("alerts", 0): 6, ("alerts", 1): 5}


async def _publish(kafka: Kafka, count: int, start: int) -> None:
    topic = kafka.settings.topic(Topic.PLATELET_ALERTS)
    for n in range(start, start + count):
        await kafka.publisher.publish(topic, f"patient-{n}", persistent_severe(f"alert-{n}"))


async def _waiting(consumer: AIOKafkaConsumer) -> int:
    return sum((await consumer_lag(consumer, consumer.assignment())).values())


def _gauge_total(partitions: int) -> float:
    name = "plateletwatch_notifier_consumer_lag"
    return sum(
        REGISTRY.get_sample_value(name, {"partition": str(p)}) or 0.0 for p in range(partitions)
    )


async def test_lag_grows_while_the_consumer_has_read_alerts_it_cannot_handle(kafka: Kafka) -> None:
    settings = kafka.settings
    consumer = AIOKafkaConsumer(
        settings.topic(Topic.PLATELET_ALERTS),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id("notifier"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    watching = asyncio.create_task(watch_lag(consumer, 0.1))
    try:
        while not consumer.assignment():  # joined the group
            await consumer.getmany(timeout_ms=200)
        await _publish(kafka, 3, 0)
        read: dict[TopicPartition, int] = {}
        while sum(read.values()) < 3:  # read, as a stuck consumer has, and not committed
            for partition, records in (await consumer.getmany(timeout_ms=500)).items():
                read[partition] = read.get(partition, 0) + len(records)
        assert await _waiting(consumer) == 3
        await _publish(kafka, 2, 3)
        assert await _waiting(consumer) == 5
        async with asyncio.timeout(10):
            while _gauge_total(settings.partitions) != 5:  # noqa: ASYNC110 - set by watch_lag
                await asyncio.sleep(0.1)
        await consumer.commit({partition: count for partition, count in read.items()})
        assert await _waiting(consumer) == 2  # handled at last
    finally:
        watching.cancel()
        await consumer.stop()
