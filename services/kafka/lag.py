"""Consumer lag as the broker has it: each partition's log end minus the group's committed offset.

Asked with a consumer of its own that joins no group (OffsetFetch needs no membership), so a
group member that is stalled, retrying one record or gone still shows its lag growing; the high
water of its own last fetch would not. A partition the group has not committed yet counts from
its first offset. Tansu answers ListOffsets short of the log end by up to one batch (see
compacted.py): there the lag may read low by that much, never high.
"""

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


async def group_lag(
    bootstrap_servers: str, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Records not yet committed by `group_id` on each (topic, partition); raises KafkaError
    (or TimeoutError) when the broker does not answer: the caller keeps its last figures."""
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not wanted:
        return {}
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        client_id=f"{group_id}-lag",
    )
    await reader.start()
    try:
        ends = await reader.end_offsets(wanted)
        firsts = await reader.beginning_offsets(wanted)
        lag = {}
        for tp in wanted:
            committed = await reader.committed(tp)
            start = firsts[tp] if committed is None else committed
            lag[tp.topic, tp.partition] = max(0, ends[tp] - start)
        return lag
    finally:
        await reader.stop()
