"""The order a patient's events are applied in, across the two input topics and across fetches.

A patient's lab results and clinical context (treatments, diagnoses) travel on two topics,
co-partitioned by patient; Kafka orders each topic partition, not the two together. A consumer
catching up on a backlog (a start, a rebalance) may fetch a partition's results well ahead of
its context: applied as fetched, a first-line treatment given before a count is applied after
it, and the patient is paged "persistent severe, no first-line therapy on record" although the
therapy was charted in time (measured: a worker joining mid-stream did so on both the faust
classifier and the first aiokafka one).

`ArrivalOrder` holds fetched records back until the other topic of the same partition has been
read at least as far, by the time each record was written (its Kafka timestamp), then releases
them merged in that order, each topic's own order kept; a topic partition read to its end (its
high-water mark) holds nothing back. At equal times, context goes first. A partition whose
records have waited HOLD_SECONDS with none released (the other topic cannot be fetched: its
leader is down) is released as it stands: a critical count is not held back without bound.
Pure: the consumer (services/classifier/service.py) tells it what was fetched and which
partitions are read to their end, applies what it releases and commits only that.
"""

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

TopicPartition = tuple[str, int]  # aiokafka's TopicPartition is this named tuple


class Written(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


Record = TypeVar("Record", bound=Written)

_EARLIEST = float("-inf")
_ANY_TIME = float("inf")
HOLD_SECONDS = 30.0


class ArrivalOrder(Generic[Record]):
    """Fetched records of (results topic, context topic) pairs of the same partition, held until
    they may be applied."""

    def __init__(self, results: str, context: str) -> None:
        self._results = results
        self._context = context
        self._held: dict[TopicPartition, deque[Record]] = {}
        self._latest: dict[TopicPartition, float] = {}  # the latest time fetched, held or not
        self._next: dict[TopicPartition, int] = {}  # the offset the next record must have at least
        self._waiting_since: dict[int, float] = {}  # partition -> since when none was released

    def add(self, fetched: Mapping[TopicPartition, Sequence[Record]]) -> None:
        """Hold newly fetched records, in each topic partition's order. A record at or below an
        offset already held or released is ignored (fetched again from before a rebalance)."""
        for tp, records in fetched.items():
            first = self._next.get(tp, 0)
            new = [record for record in records if record.offset >= first]
            if new:
                self._held.setdefault(tp, deque()).extend(new)
                self._next[tp] = new[-1].offset + 1
                latest = max(record.timestamp for record in new)
                self._latest[tp] = max(self._latest.get(tp, _EARLIEST), latest)

    def held(self, tp: TopicPartition) -> int:
        """How many records of `tp` are held."""
        return len(self._held.get(tp, ()))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is held for partitions this worker gave up (their next owner reads them
        again from the committed offsets)."""
        for tp in partitions:
            self._held.pop(tp, None)
            self._latest.pop(tp, None)
            self._next.pop(tp, None)
            self._waiting_since.pop(tp[1], None)

    def release(
        self,
        partitions: Iterable[int],
        read_to_end: Callable[[TopicPartition], bool],
        now: float,
        at_most: int,
    ) -> tuple[list[Record], list[int]]:
        """At most `at_most` held records of `partitions` that may be applied now (the first
        partitions first), in the order to apply them: each partition's two topics merged by
        time, up to the earlier of the two topics' latest fetched time (a topic read to its end
        sets no limit); and the partitions released regardless because none of their records
        had been released for HOLD_SECONDS (`now`: monotonic seconds)."""
        released: list[Record] = []
        overdue: list[int] = []
        for partition in partitions:
            if len(released) >= at_most:
                break
            results = (self._results, partition)
            context = (self._context, partition)
            limit = min(self._horizon(results, read_to_end), self._horizon(context, read_to_end))
            since = self._waiting_since.get(partition, now)
            if now - since >= HOLD_SECONDS:
                limit = _ANY_TIME
                overdue.append(partition)
            merged = self._merged(results, context, limit, at_most - len(released))
            released.extend(merged)
            if not (self._held.get(results) or self._held.get(context)):
                self._waiting_since.pop(partition, None)
            else:  # still waiting: since the last time it moved on
                self._waiting_since[partition] = now if merged else since
        return released, overdue

    def _horizon(self, tp: TopicPartition, read_to_end: Callable[[TopicPartition], bool]) -> float:
        """The time up to which `tp` is known: any record of it not fetched yet comes later in its
        log. Read to its end, it has nothing more; never fetched, nothing is known of it."""
        if read_to_end(tp):
            return _ANY_TIME
        return self._latest.get(tp, _EARLIEST)

    def _merged(
        self, results_tp: TopicPartition, context_tp: TopicPartition, limit: float, at_most: int
    ) -> list[Record]:
        results = self._held.get(results_tp) or deque()
        context = self._held.get(context_tp) or deque()
        merged: list[Record] = []
        while (results or context) and len(merged) < at_most:
            context_first = context and (
                not results or context[0].timestamp <= results[0].timestamp
            )
            take = context if context_first else results
            if take[0].timestamp > limit:
                break
            merged.append(take.popleft())
        return merged
