"""The classifier's writes a batch at a time (services/kafka/batches.py), on a real broker: each
record lands on the partition a plain send of the same key chooses, a key's records keep their
order, a record larger than a record batch still goes, and every write is acknowledged."""

import asyncio
from collections import defaultdict

import pytest

from schemas import Topic
from services.kafka.batches import RecordBatches
from services.kafka.producer import start_durable_producer
from tests.conftest import Kafka

pytestmark = pytest.mark.integration


async def test_batched_records_land_as_plain_sends_would_in_order(kafka: Kafka) -> None:
    settings = kafka.settings
    topic = settings.topic(Topic.PLATELET_ALERTS)
    state_topic = settings.topic(Topic.CLASSIFIER_DEADLETTER)
    producer = await start_durable_producer(
        settings.kafka_bootstrap_servers or "", "test-batches", 15, batch_bytes=1_000
    )
    try:
        writes = RecordBatches(producer)
        keys = [f"patient-{n % 7}".encode() for n in range(60)]
        for n, key in enumerate(keys):  # 60 records of 7 keys: several batches per partition
            writes.add(topic, key, str(n).encode())
        writes.add(topic, b"patient-big", b"x" * 5_000)  # more than a record batch holds
        writes.add(state_topic, b"patient-0", b"on partition 1", partition=1)
        acknowledged = await asyncio.gather(*await writes.send())
        plain = {
            key: (await producer.send_and_wait(topic, b"plain", key=key)).partition
            for key in {*keys, b"patient-big"}
        }
    finally:
        await producer.stop()

    assert len(acknowledged) >= 4  # the batches the records filled, each acknowledged
    records = await kafka.records(Topic.PLATELET_ALERTS)
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for record in records:
        assert record.partition == plain[record.key]
        if record.value != b"plain":
            by_key[record.key].append(record.value)
    for n, key in enumerate(sorted(set(keys))):
        assert [int(v) for v in by_key[key]] == list(range(n, 60, 7))
    assert by_key[b"patient-big"] == [b"x" * 5_000]
    [placed] = await kafka.records(Topic.CLASSIFIER_DEADLETTER)
    assert (placed.partition, placed.value) == (1, b"on partition 1")
