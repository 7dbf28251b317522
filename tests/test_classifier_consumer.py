"""The classifier's consumer glue without a broker: a revocation waits for the batch under way
and forgets what was held for the partitions given up (services/classifier/service.py). The loop
itself runs against real brokers in test_classifier_service.py and test_failover.py."""

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.classifier.arrival import ArrivalOrder
from services.classifier.service import Partitions
from services.classifier.store import PatientStore

RESULTS, CONTEXT = "lab.results.v1", "clinical.context.v1"


async def test_a_revocation_waits_for_the_batch_under_way() -> None:
    """Revoked while a batch is being made durable, the worker must finish and commit it before
    the group hands the partitions on: else the next owner reads back a changelog without the
    batch's records and the late records overwrite its newer ones."""
    turn = asyncio.Lock()
    held = ArrivalOrder[ConsumerRecord](RESULTS, CONTEXT)
    store = PatientStore("127.0.0.1:9", "changelog")
    partitions = Partitions(store, held, (RESULTS, CONTEXT), turn)
    partitions.owned = {TopicPartition(RESULTS, 0), TopicPartition(CONTEXT, 0)}
    record = ConsumerRecord(RESULTS, 0, 4, 100, 0, b"patient", b"{}", None, 7, 2, ())
    held.add({TopicPartition(RESULTS, 0): [record]})
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
    assert held.held(TopicPartition(RESULTS, 0)) == 0  # the next owner fetches it again
