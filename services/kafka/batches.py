"""Records handed to Kafka a batch of work at a time, one record batch per partition.

A worker that handles events in batches collects what they cause (alerts, dead letters, state
records) in one `RecordBatches`, in the order it wants them written; `send` appends them to one
aiokafka record batch per topic partition and hands each to the producer once. That spares a
send per record (a coroutine, an accumulator append, and for a keyed record a pure-Python
murmur2), and the producer's one-batch-per-partition drain then carries the work in few
requests. A keyed record with no partition goes where the producer's default partitioner puts it,
so a patient's records share a partition however they were written. Records keep their order
within a partition.
"""

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

_by_key = DefaultPartitioner()


class RecordBatches:
    """The records of one batch of work, written together by `send`."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._records: list[tuple[str, int | None, bytes | None, bytes]] = []

    def add(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        """Keep a record for `send`; no partition: the key's, as the producer would choose (no
        key either: any partition)."""
        self._records.append((topic, partition, key, value))

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every record kept so far to the producer; returns the futures of their
        acknowledgements (acks as the producer was started with), which raise the producer's
        error (KafkaError, KafkaTimeoutError) when a write fails. Raises the same if the
        producer cannot take a batch at all."""
        producer = self._producer
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], Any] = {}
        acks: list[asyncio.Future[Any]] = []
        for topic, partition, key, value in self._records:
            if partition is None:
                if topic not in partitions:
                    partitions[topic] = sorted(await producer.partitions_for(topic))
                partition = _by_key(key, partitions[topic], partitions[topic])
            batch = open_batches.get((topic, partition))
            if batch is not None and batch.append(timestamp=None, key=key, value=value) is not None:
                continue
            if batch is not None:  # full: it goes now, the record starts the next one
                acks.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[topic, partition] = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value)  # an empty batch takes any record
        for (topic, partition), batch in open_batches.items():
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        self._records.clear()
        return acks
