"""The classifier's consumer glue without a broker: a revocation waits for the batch under way
and forgets what was held for the partitions given up, and a batch gathered across a rebalance
keeps only what was fetched after it (services/classifier/service.py). The loop itself runs
against real brokers in test_classifier_service.py and test_failover.py."""

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.classifier.arrival import ArrivalOrder
from services.classifier.service import Partitions, _batch
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


class RebalancingConsumer:
    """Answers `getmany` from a script; before the second answer the group rebalances (as
    aiokafka's coordinator would, calling the listener while a fetch waits)."""

    def __init__(self, partitions: Partitions, answers: list[dict[Any, list[Any]]]) -> None:
        self._partitions = partitions
        self._answers = answers
        self.calls = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.calls += 1
        if self.calls == 2:
            owned = set(self._partitions.owned)
            await self._partitions.on_partitions_revoked(owned)
            await self._partitions.on_partitions_assigned(set())  # no histories to read back
        return self._answers.pop(0) if self._answers else {}


async def test_records_fetched_before_a_rebalance_are_dropped_those_after_it_kept() -> None:
    """Found in review: a batch gathered across a rebalance applied records from before it
    (60-79) and committed past records the new assignment had to fetch again (50-59)."""
    partitions = Partitions(
        PatientStore("127.0.0.1:9", "changelog"),
        ArrivalOrder[ConsumerRecord](RESULTS, CONTEXT),
        (RESULTS, CONTEXT),
        asyncio.Lock(),
    )
    tp = TopicPartition(RESULTS, 0)

    def records(first: int, last: int) -> list[ConsumerRecord]:
        return [
            ConsumerRecord(RESULTS, 0, n, n, 0, b"patient", b"{}", None, 7, 2, ())
            for n in range(first, last + 1)
        ]

    consumer = RebalancingConsumer(partitions, [{tp: records(60, 79)}, {tp: records(50, 52)}])
    before = partitions.generation
    generation, fetched = await _batch(consumer, partitions, 200)  # type: ignore[arg-type]
    assert consumer.calls >= 2
    assert generation == partitions.generation != before
    assert [r.offset for r in fetched[tp]] == [50, 51, 52]
