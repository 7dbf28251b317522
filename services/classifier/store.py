"""The classifier's own state store: patient histories of the partitions this worker is given.

Why not a faust table: faust's table recovery fails in ways that stop alerting (its persisted
offset ends up above the high-water mark and every start crashes; with memory:// it reads the
raw patient keys as JSON and never becomes ready; faust-streaming issues 158, 597, 651). Here the
changelog is read back whole, to the high-water mark of the fetches (services/kafka/
compacted.py), whenever a partition is assigned, and nothing is kept on local disk: a start, a
SIGKILL or a rebalance all take the same path.
"""

import asyncio
import logging
from collections.abc import Iterable

from prometheus_client import Counter

from services.classifier.state import PatientState, decode
from services.kafka.compacted import read_partitions

log = logging.getLogger(__name__)

UNREADABLE = Counter(
    "plateletwatch_classifier_state_records_unreadable_total",
    "Changelog records that could not be read back as a patient's history (the patient starts "
    "again from the events that follow).",
)

Patients = dict[bytes, PatientState]


class PatientStore:
    """Histories by partition; a partition is usable once its changelog has been read back."""

    def __init__(self, bootstrap_servers: str, changelog_topic: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = changelog_topic
        self._partitions: dict[int, asyncio.Future[Patients]] = {}
        self._loading: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Every partition given to this worker has been read back."""
        return bool(self._partitions) and all(f.done() for f in self._partitions.values())

    def assign(self, partitions: Iterable[int]) -> None:
        """Keep exactly these partitions: forget the others, start reading back the new ones."""
        wanted = set(partitions)
        for partition in self._partitions.keys() - wanted:
            del self._partitions[partition]  # another worker owns it now; its changelog moves on
        new = wanted - self._partitions.keys()
        if new:
            loop = asyncio.get_running_loop()
            futures = {p: loop.create_future() for p in new}
            self._partitions.update(futures)
            task = asyncio.create_task(self._load(futures))
            self._loading.add(task)
            task.add_done_callback(self._loading.discard)

    def revoke(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    def loaded(self, partition: int) -> bool:
        """Whether `partition`'s histories have been read back (a read that failed counts: its
        events then raise, rather than wait)."""
        future = self._partitions.get(partition)
        return future is not None and future.done()

    async def patients(self, partition: int) -> Patients:
        """The histories of one partition, waiting until it has been read back."""
        if partition not in self._partitions:  # an event before the assignment was signalled
            self.assign([*self._partitions, partition])
        return await self._partitions[partition]

    async def _load(self, futures: dict[int, asyncio.Future[Patients]]) -> None:
        try:
            records = await read_partitions(self._bootstrap_servers, self._topic, futures)
        except Exception as error:  # the waiting events must see it, not hang
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)
            raise
        for partition, future in futures.items():
            if not future.done():
                future.set_result(_decoded(records[partition]))
        log.info(
            "patient state read back: partitions %s, %d patients",
            sorted(futures),
            sum(len(records[p]) for p in futures),
        )


def _decoded(records: dict[bytes, bytes | None]) -> Patients:
    patients: Patients = {}
    for key, stored in records.items():
        if stored is None:
            continue
        try:
            patients[key] = PatientState(decode(stored), stored)
        except (ValueError, KeyError, TypeError) as error:
            UNREADABLE.inc()
            log.error("a patient state record could not be read back (%s)", type(error).__name__)
    return patients
