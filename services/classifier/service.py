"""The classifier as a process: a Kafka group consumer feeding `Classifier`, and its HTTP pages.

Why not faust's stream: faust-streaming's reader (a consumer thread, a queue per topic, an event
object and an acknowledgement per record) cost about 118 us of CPU per event before any
classification, eight times a plain aiokafka consumer decoding the same events (issue 17;
robinhood/faust#563 reports the same). The worker reads with one aiokafka group consumer:

- A batch is what the consumer has fetched, up to BATCH_EVENTS, waiting at most BATCH_SECONDS
  after the first record for more. Its events are classified, its writes made durable
  (services/classifier/worker.py), and only then are its offsets committed. If Kafka refuses a
  write the process exits with status 70: a supervisor restarts it from the last commit, never
  from a state the changelog does not have.
- Results and clinical context are co-partitioned by patient. The range assignor gives one
  worker the same partition of both topics, and a partition's results and context are applied
  in the order they were written, across fetches (services/classifier/arrival.py): records are
  held until the other topic has been read as far, and only what was applied is committed. A
  topic partition with HOLD_AT_MOST records held stops being fetched until they are applied.
- Rebalances: revoking waits for the batch under way to be committed, then forgets the revoked
  partitions' histories; the new assignment's histories are read back from the changelog before
  their events are applied (services/classifier/store.py; a partition's events wait, held, until
  then). Records held for revoked partitions, and records fetched before a rebalance, are
  dropped; the next owner fetches them again from the committed offsets. A batch that takes
  longer than its timeout (two produce timeouts and some) exits 70, and the group's rebalance
  timeout is twice that, so a revocation can always wait for the batch under way.
- SIGTERM or SIGINT: the batch under way finishes and is committed, the consumer leaves the group,
  the producer is flushed, the process exits 0.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterable
from typing import NoReturn

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from schemas import Topic
from schemas.topics import PATIENT_STATE_TABLE, changelog_topic
from services.classifier.arrival import HOLD_SECONDS, ArrivalOrder
from services.classifier.rules import Rules
from services.classifier.store import PatientStore
from services.classifier.worker import Classifier, where
from services.config import Settings
from services.kafka.batches import RecordBatches
from services.kafka.lag import group_lag
from services.kafka.producer import start_durable_producer

log = logging.getLogger(__name__)

LAG = Gauge(
    "plateletwatch_classifier_consumer_lag",
    "Events on each input partition the group has not committed yet, as the broker has it.",
    ["input", "partition"],
)

RELEASED_UNORDERED = Counter(
    "plateletwatch_classifier_released_unordered_total",
    "Times a partition's events were applied without the other input topic read as far: its "
    "records had waited too long (that topic could not be fetched).",
)

_EXIT_NOT_DURABLE = 70  # EX_SOFTWARE: Kafka refused a write; restart from the last commit
# A batch is what the consumer has fetched, up to BATCH_EVENTS, closed BATCH_SECONDS after its
# first records: live traffic goes in small batches, a backlog in large ones, so that the wait for
# each batch's acknowledgements is rare. Live alerts then reach the notifier a few at a time, not
# one by one (at 100 results/s, one by one doubled the p50 of result to page: each of the
# notifier's rounds has a cost of its own).
# Its writes go out at its end, at most WRITE_BATCH_BYTES per partition in one record batch
# (below Kafka's default max.message.bytes, about 1 MB), so that they travel in one request.
BATCH_EVENTS = 2000
BATCH_SECONDS = 0.01
WRITE_BATCH_BYTES = 256_000
HOLD_AT_MOST = 20_000
LAG_POLL_SECONDS = 5.0
_POLL_MS = 200  # how long a poll waits for records before the loop looks for a stop


class Partitions(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no stub
    """The input partitions this worker owns, kept in step with the group. Revocation waits on
    `turn`, which a batch holds from its classification to its commit."""

    def __init__(
        self,
        store: PatientStore,
        held: ArrivalOrder[ConsumerRecord],
        inputs: tuple[str, ...],
        turn: asyncio.Lock,
    ) -> None:
        self.owned: set[TopicPartition] = set()
        self.rebalancing = True  # until the first assignment
        self.generation = 0  # moves on at each revocation and assignment
        self._store = store
        self._held = held
        self._inputs = inputs
        self._turn = turn

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.rebalancing = True
        self.generation += 1
        async with self._turn:  # the batch under way is committed first
            gone = [tp for tp in revoked if tp.topic in self._inputs]
            self.owned.difference_update(gone)
            self._held.forget(gone)
            self._store.revoke(tp.partition for tp in gone)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        mine = {tp for tp in assigned if tp.topic in self._inputs}
        self.generation += 1
        self.owned = mine
        self._store.assign(tp.partition for tp in mine)
        self.rebalancing = False


def batch_timeout(settings: Settings) -> float:
    """Seconds a batch may take to be classified and made durable (two acknowledged writes, each
    within the produce timeout, and time to spare) before the worker exits 70."""
    return 2 * settings.kafka_produce_timeout_seconds + 10


def group_consumer(settings: Settings, bootstrap_servers: str) -> AIOKafkaConsumer:
    """The worker's consumer in the classifier's group (not started, not subscribed): offsets
    committed by the worker, a fetch held by the broker at most the configured wait."""
    session_ms = round(settings.classifier_session_timeout_seconds * 1000)
    rebalance_ms = max(session_ms, round(2 * batch_timeout(settings) * 1000))
    group_id = settings.group_id("classifier")
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=f"{group_id}-reader",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=round(settings.classifier_fetch_max_wait_seconds * 1000),
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,  # a revocation waits for the batch under way
        heartbeat_interval_ms=session_ms // 4,
        # Range, not round robin: one worker gets the same partition of both inputs.
        partition_assignment_strategy=(RangePartitionAssignor,),
    )


class ClassifierService:
    """The consumer loop, its lag gauges and its HTTP pages, for one worker process."""

    def __init__(self, settings: Settings, bootstrap_servers: str, rules: Rules) -> None:
        self._settings = settings
        self._bootstrap_servers = bootstrap_servers
        self._group_id = settings.group_id("classifier")
        self._lab_results = settings.topic(Topic.LAB_RESULTS)
        self._inputs = (self._lab_results, settings.topic(Topic.CLINICAL_CONTEXT))
        state_topic = changelog_topic(self._group_id, PATIENT_STATE_TABLE)
        self.store = PatientStore(bootstrap_servers, state_topic)
        self._classifier = Classifier(settings, rules, self.store, state_topic)
        self._turn = asyncio.Lock()
        self._held = ArrivalOrder[ConsumerRecord](*self._inputs)
        self.partitions = Partitions(self.store, self._held, self._inputs, self._turn)
        self._stopping = asyncio.Event()
        self._consuming = False
        self._turns = 0
        self._full = False  # the last batch released as many events as a batch takes

    @property
    def ready(self) -> bool:
        """Consuming, given partitions by the group, and their histories read back."""
        return (
            self._consuming
            and bool(self.partitions.owned)
            and not self.partitions.rebalancing
            and self.store.ready
        )

    def stop(self) -> None:
        """Ask the loop to end after the batch under way."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve the HTTP pages and classify until `stop`; exits the process (status 70) if a
        batch cannot be made durable."""
        pages = web.AppRunner(self._pages(), access_log=None)
        await pages.setup()
        try:
            site = web.TCPSite(pages, self._settings.bind_host, self._settings.classifier_port)
            await site.start()
            await self._consume()
        finally:
            await pages.cleanup()

    async def _consume(self) -> None:
        try:
            producer = await start_durable_producer(
                self._bootstrap_servers,
                f"{self._group_id}-writer",
                self._settings.kafka_produce_timeout_seconds,
                batch_bytes=WRITE_BATCH_BYTES,
            )
        except Exception as error:
            _exit_not_durable(error)
        consumer = group_consumer(self._settings, self._bootstrap_servers)
        consumer.subscribe(self._inputs, listener=self.partitions)
        lag: asyncio.Task[None] | None = None
        try:
            await consumer.start()
            self._consuming = True
            lag = asyncio.create_task(self._poll_lag(), name="consumer-lag")
            while not self._stopping.is_set():
                # A full batch released: more may be ready now, so the next fetch does not wait.
                wait_ms = 0 if self._full else _POLL_MS
                generation, fetched = await _batch(consumer, self.partitions, wait_ms)
                async with self._turn:
                    if generation != self.partitions.generation:  # rebalanced since: stale
                        fetched = {}
                    await self._classify(consumer, producer, fetched)
        finally:
            self._consuming = False
            if lag is not None:
                lag.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await lag
            try:
                await consumer.stop()
            finally:
                await producer.stop()

    async def _classify(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        fetched: dict[TopicPartition, list[ConsumerRecord]],
    ) -> None:
        """One batch: what may be applied of the records held and fetched, classified, made
        durable, then committed. A commit the group refuses (the partitions moved on in a
        rebalance) is logged: their next owner applies the batch again, recognising what it has,
        and a re-sent alert keeps its alert_id."""
        owned = self.partitions.owned
        self._held.add({tp: records for tp, records in fetched.items() if tp in owned})
        read_to_end = {tp: await _read_to_end(consumer, tp) for tp in owned}
        loaded = sorted({tp.partition for tp in owned if self.store.loaded(tp.partition)})
        first = self._turns % len(loaded) if loaded else 0  # each partition first in turn: none
        self._turns += 1  # waits behind a busy one for the batch's room
        events, overdue = self._held.release(
            loaded[first:] + loaded[:first],
            lambda tp: read_to_end.get(tp, False),
            asyncio.get_running_loop().time(),
            BATCH_EVENTS,
        )
        self._full = len(events) >= BATCH_EVENTS
        if overdue:
            RELEASED_UNORDERED.inc(len(overdue))
            log.warning(
                "partitions %s: events applied without the other input topic read as far "
                "(it could not be fetched for %.0f s)",
                overdue,
                HOLD_SECONDS,
            )
        for tp in owned:  # a partition far ahead of its pair waits for it, fetched no further
            if self._held.held(tp) >= HOLD_AT_MOST:
                consumer.pause(tp)
            elif tp in consumer.paused():
                consumer.resume(tp)
        if not events:
            return
        try:
            async with asyncio.timeout(batch_timeout(self._settings)):
                await self._classifier.classify_batch(events, RecordBatches(producer))
        except BaseException as error:  # timed out or cancelled midway too: nothing committed
            _exit_not_durable(error)
        offsets: dict[TopicPartition, int] = {}
        for event in events:
            offsets[TopicPartition(event.topic, event.partition)] = event.offset + 1
        try:
            async with asyncio.timeout(batch_timeout(self._settings)):
                await consumer.commit(offsets)
        except (KafkaError, TimeoutError) as error:
            log.warning("a batch's offsets were not committed (%s)", type(error).__name__)

    async def _poll_lag(self) -> None:
        """Every LAG_POLL_SECONDS, the lag of this worker's partitions from the broker (log end
        minus the group's committed offset): it grows while the worker is stalled. Unanswered:
        kept as it was."""
        while True:
            await asyncio.sleep(LAG_POLL_SECONDS)
            mine = [(tp.topic, tp.partition) for tp in self.partitions.owned]
            try:
                lag = await group_lag(self._bootstrap_servers, self._group_id, mine)
            except (KafkaError, TimeoutError, OSError) as error:
                log.warning("consumer lag not read from the broker (%s)", type(error).__name__)
                continue
            for (topic, partition), behind in lag.items():
                kind = "lab_result" if topic == self._lab_results else "clinical_context"
                LAG.labels(input=kind, partition=str(partition)).set(behind)

    def _pages(self) -> web.Application:
        pages = web.Application()

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "service": "classifier"})

        async def readyz(request: web.Request) -> web.Response:
            ready = self.ready
            return web.json_response(
                {"status": "ready" if ready else "not ready", "service": "classifier"},
                status=200 if ready else 503,
            )

        async def metrics(request: web.Request) -> web.Response:
            # aiohttp refuses a charset in content_type=, so the header is set whole.
            return web.Response(
                body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        pages.router.add_get("/healthz", healthz)
        pages.router.add_get("/readyz", readyz)
        pages.router.add_get("/metrics", metrics)
        return pages


async def _batch(
    consumer: AIOKafkaConsumer, partitions: Partitions, wait_ms: int
) -> tuple[int, dict[TopicPartition, list[ConsumerRecord]]]:
    """Records fetched, up to BATCH_EVENTS: what came within `wait_ms`, then whatever else comes
    within BATCH_SECONDS of it; and the group generation they were fetched in. Records returned
    before a rebalance are dropped (the positions went back to the committed offsets: they are
    fetched again), those returned after it kept."""
    fetched: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
        timeout_ms=wait_ms, max_records=BATCH_EVENTS
    )
    generation = partitions.generation
    taken = sum(map(len, fetched.values()))
    loop = asyncio.get_running_loop()
    closes = loop.time() + BATCH_SECONDS
    while fetched and taken < BATCH_EVENTS and (left := closes - loop.time()) > 0:
        more = await consumer.getmany(
            timeout_ms=round(left * 1000), max_records=BATCH_EVENTS - taken
        )
        if partitions.generation != generation:  # a rebalance since the records so far came
            generation = partitions.generation
            fetched, taken = {}, 0
        for tp, records in more.items():
            fetched.setdefault(tp, []).extend(records)
            taken += len(records)
    return generation, fetched


async def _read_to_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """Whether every record `tp` had at its last fetch response has been fetched; False while
    that is not known (no fetch response yet, the partition being reassigned)."""
    try:
        highwater = consumer.highwater(tp)
        return highwater is not None and await consumer.position(tp) >= highwater
    except (AssertionError, KafkaError):  # aiokafka asserts the partition is assigned
        return False


def run_service(service: ClassifierService) -> None:
    """Run until SIGTERM/SIGINT, then stop after the batch under way."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        await service.run()

    asyncio.run(main())


def _exit_not_durable(error: BaseException) -> NoReturn:
    """Kafka did not take a write: exit, so that the supervisor restarts the worker from the last
    committed offset, never from a state the changelog does not have."""
    log.critical(
        "an event could not be made durable (%s); exiting so that the worker restarts from the "
        "last committed offset",
        where(error),
    )
    logging.shutdown()
    os._exit(_EXIT_NOT_DURABLE)
