"""Reading a compacted topic back: the newest record of every key, as a state store recovers.

A partition is read from its first offset to the high-water mark of the fetch responses, not to
the offset ListOffsets reports: the embedded broker (Tansu) answers ListOffsets with the last
batch's base offset + 1, short of the log end whenever that batch holds more than one record,
and a recovery that stops there restores an old state (faust's table recovery did, and then
refused to start: "persisted offset is higher than the highwater"). Apache Kafka gives the same
answer both ways. A compacted partition may skip offsets: only the position reaching the
high-water mark counts.
"""

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

_FETCH_WAIT_MS = 100  # a fetch at the log end waits this long: Tansu never answers it early
_RETRY_SECONDS = 1.0


async def read_partitions(
    bootstrap_servers: str, topic: str, partitions: Iterable[int]
) -> dict[int, dict[bytes, bytes | None]]:
    """The newest record of every key in each partition (None for a deletion marker).

    Retries while the broker is unreachable: a store must not start from an empty state.
    """
    wanted = sorted(set(partitions))
    while True:
        try:
            return await _read_once(bootstrap_servers, topic, wanted)
        except KafkaError as error:
            log.warning(
                "reading %s partitions %s failed (%s); retrying",
                topic,
                wanted,
                type(error).__name__,
            )
            await asyncio.sleep(_RETRY_SECONDS)


async def _read_once(
    bootstrap_servers: str, topic: str, partitions: list[int]
) -> dict[int, dict[bytes, bytes | None]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=_FETCH_WAIT_MS,
        client_id="plateletwatch-state-recovery",
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        latest: dict[int, dict[bytes, bytes | None]] = {p: {} for p in partitions}
        pending = set(assigned)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=_FETCH_WAIT_MS * 5)
            for tp, records in batches.items():
                for record in records:
                    if record.key is not None:
                        latest[tp.partition][record.key] = record.value
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
        return latest
    finally:
        await consumer.stop()
