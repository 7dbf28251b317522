"""Consumer lag as the broker has it: each partition's log end minus the group's committed offset.

A group member that is stalled, retrying one record or gone still shows its lag growing this way;
the high water of its own last fetch would not. A partition the group has not committed yet
counts from its first offset. The classifier asks with a consumer of its own that joins no group
(`group_lag`: OffsetFetch needs no membership); the notifier asks its own consumer
(`consumer_lag`). Tansu answers ListOffsets short of the log end by up to
one batch (see compacted.py): there the lag may read low by that much, never high.
"""

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


def partition_lag(
    end: dict[TopicPartition, int],
    committed: dict[TopicPartition, int | None],
    beginning: dict[TopicPartition, int],
) -> dict[tuple[str, int], int]:
    """Records waiting on each (topic, partition): from the group's committed offset (or, none
    committed yet, the log's start) to the log's end."""
    lag = {}
    for tp, log_end in end.items():
        start = committed.get(tp)
        start = beginning.get(tp, 0) if start is None else start
        lag[tp.topic, tp.partition] = max(0, log_end - start)
    return lag


async def consumer_lag(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[tuple[str, int], int]:
    """The lag of `partitions` for `consumer`'s group, asked through `consumer`; raises KafkaError
    (or TimeoutError) when the broker does not answer: the caller keeps its last figures."""
    wanted = list(partitions)
    if not wanted:
        return {}
    end = await consumer.end_offsets(wanted)
    beginning = await consumer.beginning_offsets(wanted)
    committed = {tp: await consumer.committed(tp) for tp in wanted}
    return partition_lag(end, committed, beginning)


async def group_lag(
    bootstrap_servers: str, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Records not yet committed by `group_id` on each (topic, partition), asked with a consumer
    started for the purpose; raises as `consumer_lag` does."""
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not wanted:
        return {}
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        client_id=f"{group_id}-lag",
    )
    try:
        await reader.start()
        return await consumer_lag(reader, wanted)
    finally:
        await reader.stop()
