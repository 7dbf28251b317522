"""The classifier's consumer glue without a broker: the order a fetched batch is applied in, and
a revocation that waits for the batch under way (services/classifier/service.py). The loop
itself runs against real brokers in test_classifier_service.py and test_failover.py."""

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.classifier.service import Partitions, in_written_order
from services.classifier.store import PatientStore

RESULTS, CONTEXT = "lab.results.v1", "clinical.context.v1"


def record(topic: str, partition: int, offset: int, timestamp: int) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, timestamp, 0, b"patient", b"{}", None, 7, 2, ())


def test_a_partitions_results_and_context_are_merged_as_written_each_topics_order_kept() -> None:
    results = [record(RESULTS, 0, 10, 100), record(RESULTS, 0, 11, 300)]
    # Two ingest replicas' clocks: the context partition's own order is not its timestamps'.
    context = [record(CONTEXT, 0, 5, 200), record(CONTEXT, 0, 6, 150), record(CONTEXT, 0, 7, 400)]
    other = [record(RESULTS, 1, 3, 50)]
    fetched = {
        TopicPartition(RESULTS, 0): results,
        TopicPartition(CONTEXT, 0): context,
        TopicPartition(RESULTS, 1): other,
    }
    ordered = in_written_order(fetched, set(fetched))
    assert [(r.topic, r.offset) for r in ordered if r.partition == 0] == [
        (RESULTS, 10),
        (CONTEXT, 5),
        (CONTEXT, 6),
        (RESULTS, 11),
        (CONTEXT, 7),
    ]
    assert [r.offset for r in ordered if r.partition == 1] == [3]


def test_records_of_a_partition_no_longer_owned_are_not_applied() -> None:
    kept, revoked = TopicPartition(RESULTS, 0), TopicPartition(RESULTS, 1)
    fetched = {kept: [record(RESULTS, 0, 1, 10)], revoked: [record(RESULTS, 1, 1, 10)]}
    assert [r.partition for r in in_written_order(fetched, {kept})] == [0]


async def test_a_revocation_waits_for_the_batch_under_way() -> None:
    """Revoked while a batch is being made durable, the worker must finish and commit it before
    the group hands the partitions on: else the next owner reads back a changelog without the
    batch's records and the late records overwrite its newer ones."""
    turn = asyncio.Lock()
    partitions = Partitions(PatientStore("127.0.0.1:9", "changelog"), (RESULTS, CONTEXT), turn)
    partitions.owned = {TopicPartition(RESULTS, 0), TopicPartition(CONTEXT, 0)}
    partitions.rebalancing = False
    await turn.acquire()  # a batch under way
    revoking = asyncio.create_task(partitions.on_partitions_revoked(set(partitions.owned)))
    await asyncio.sleep(0.05)
    assert not revoking.done()
    assert partitions.rebalancing  # not ready while the group rebalances
    assert partitions.owned  # the batch may still commit what it owns
    turn.release()
    await asyncio.wait_for(revoking, timeout=5)
    assert partitions.owned == set()
