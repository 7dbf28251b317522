"""The classifier as a faust-streaming worker: decode, call the engine, publish alerts.

One agent reads lab.results.v1 and clinical.context.v1 together (co-partitioned by patient), so a
patient's results and treatments are applied in order to one history. faust runs the stream and
the consumer group; the histories are the classifier's own (services/classifier/store.py): one
record per patient in a compacted changelog, written to the partition of the events it came
from, read back whole when a partition is assigned.

Processing is at-least-once, a batch of events at a time (faust's take_events): the patients'
histories stay live in memory, each event's alerts are kept in order as it is applied, each
patient's new record once per batch; at the end of the batch the alerts and dead letters are
written (one record batch per partition, services/kafka/batches.py) by the worker's own
producer, then, once Kafka has acknowledged them, the records (a record never runs ahead of the
alerts it caused), and the batch is done only once Kafka has acknowledged those too, so faust
can commit its offsets only after everything they caused is durable;
after a crash an event may be applied again, the engine recognises it, and a re-sent alert
carries the same alert_id, the notifier's dedupe key. An event that cannot be decoded or applied,
or that would grow the history past its limit, is dead-lettered and the patient's state stays as
it was. If Kafka refuses a write the process exits: a supervisor restarts it from the last
commit, never from a state the changelog does not have.
"""

import asyncio
import logging
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from pydantic import ValidationError

import services.build_info  # noqa: F401 - registers plateletwatch_build_info
from schemas import AlertKind, LabResult, Topic, clinical_context_adapter
from schemas.topics import PATIENT_STATE_TABLE, changelog_topic
from services.classifier.dead_letters import classifier_dead_letter
from services.classifier.engine import History, apply
from services.classifier.rules import Rules
from services.classifier.state import PatientState, StateTooLargeError, encode_within
from services.classifier.store import Patients, PatientStore
from services.config import Settings
from services.kafka.batches import RecordBatches
from services.kafka.lag import group_lag
from services.kafka.producer import start_durable_producer

log = logging.getLogger(__name__)

EVENTS = Counter(
    "plateletwatch_classifier_events_total",
    "Events the classifier consumed, by kind and outcome.",
    ["kind", "outcome"],
)
ALERTS = Counter(
    "plateletwatch_classifier_alerts_total", "Alerts emitted, by alert kind.", ["alert_kind"]
)
SUPPRESSED = Counter(
    "plateletwatch_classifier_suppressed_repeats_total",
    "Repeat critical values not paged (within an open episode, not low enough, too soon).",
)
DEAD_LETTERS = Counter(
    "plateletwatch_classifier_dead_letters_total",
    "Events set aside on classifier.deadletter.v1, by reason; the worker went on.",
    ["reason"],
)
# Label children bound once (at 0 from the start: an alert rule sees the first increase).
dead_lettered = {
    reason: DEAD_LETTERS.labels(reason=reason)
    for reason in ("undecodable_event", "no_patient_key", "engine_error", "patient_state_limit")
}
alerted = {kind: ALERTS.labels(alert_kind=kind.value) for kind in AlertKind}
counted = {
    (kind, outcome): EVENTS.labels(kind=kind, outcome=outcome)
    for kind in ("lab_result", "clinical_context")
    for outcome in ("evaluated", "duplicate", "dead_lettered")
}
SHRUNK = Counter(
    "plateletwatch_classifier_histories_shrunk_total",
    "Times a patient's history outgrew its changelog record and its oldest half was forgotten.",
)
LAG = Gauge(
    "plateletwatch_classifier_consumer_lag",
    "Events on each input partition the group has not committed yet, as the broker has it.",
    ["input", "partition"],
)

_EXIT_NOT_DURABLE = 70  # EX_SOFTWARE: Kafka refused a write; restart from the last commit
# A batch is what the consumer has at hand, up to BATCH_EVENTS, waiting at most BATCH_SECONDS for
# more: live traffic goes in small batches within 10 ms, a backlog in large ones, so that the wait
# for each batch's acknowledgements is rare (2,000 rather than 500: 287 -> 258 us of CPU an event).
# Its writes go out at its end, at most WRITE_BATCH_BYTES per partition in one record batch
# (below Kafka's default max.message.bytes, about 1 MB), so that they travel in one request.
BATCH_EVENTS = 2000
BATCH_SECONDS = 0.01
WRITE_BATCH_BYTES = 256_000
LAG_POLL_SECONDS = 5.0


class Writes(Protocol):
    """Records kept for a batch, then handed to Kafka together (services/kafka/batches.py)."""

    def add(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None: ...

    async def send(self) -> list[asyncio.Future[Any]]: ...


@dataclass(slots=True)
class Batch:
    """What a batch of events writes before its offsets may be committed: its alerts and dead
    letters in order, then each patient's latest record, once."""

    writes: Writes
    records: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    async def make_durable(self, state_topic: str) -> None:
        """Write the alerts and dead letters and wait for Kafka's acknowledgements, then the
        patients' records to `state_topic`, and wait again. Never a record first: a record
        durable before the alert it caused marks the event applied, and after a crash the event
        would be a duplicate whose alert is never sent. Raises the first refused write; no record
        is sent after a refused alert."""
        await asyncio.gather(*await self.writes.send())
        for (key, partition), stored in self.records.items():
            self.writes.add(state_topic, key, stored, partition)
        await asyncio.gather(*await self.writes.send())


def create_app(settings: Settings, bootstrap_servers: str, rules: Rules) -> faust.App:
    """Build the faust app; topics must already exist (`plateletwatch topics`)."""
    app_id = settings.group_id("classifier")
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(settings.classifier_data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        broker_session_timeout=settings.classifier_session_timeout_seconds,
        broker_rebalance_timeout=settings.classifier_session_timeout_seconds,
        broker_heartbeat_interval=settings.classifier_session_timeout_seconds / 4,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.bind_host,
        web_host=settings.bind_host,
        web_port=settings.classifier_port,
    )
    lab_results = settings.topic(Topic.LAB_RESULTS)
    inputs = (lab_results, settings.topic(Topic.CLINICAL_CONTEXT))
    patient_events = app.topic(
        *inputs, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )

    alerts = settings.topic(Topic.PLATELET_ALERTS)
    dead_letters = settings.topic(Topic.CLASSIFIER_DEADLETTER)
    state_topic = changelog_topic(app_id, PATIENT_STATE_TABLE)

    store = PatientStore(bootstrap_servers, state_topic)

    def assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        store.assign(tp.partition for tp in assigned if tp.topic in inputs)

    def revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        store.revoke(tp.partition for tp in revoked if tp.topic in inputs)

    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]  # faust's stub
    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]

    def set_aside(message: Any, reason_code: str, reason: str, batch: Batch) -> None:
        raw = message.value or b""  # a record with no value (a deletion marker) too
        letter = classifier_dead_letter(raw, message.topic, reason_code, reason, datetime.now(UTC))
        batch.writes.add(dead_letters, message.key, letter.model_dump_json().encode())
        dead_lettered[reason_code].inc()

    def classify_one(message: Any, kind: str, patients: Patients, batch: Batch) -> str:
        """Apply one event (`kind`: lab_result or clinical_context); return its outcome for the
        events counter. Its alerts or dead letter, and the patient's new record, go in `batch`."""
        try:
            decoded = (
                LabResult.model_validate_json(message.value)
                if kind == "lab_result"
                else clinical_context_adapter.validate_json(message.value)
            )
        except ValidationError as error:
            log.error(
                "dead-lettering an undecodable %s event: %d errors", kind, error.error_count()
            )
            set_aside(
                message,
                "undecodable_event",
                f"not a {kind} event ({error.error_count()} errors)",
                batch,
            )
            return "dead_lettered"
        key = message.key
        if not key:
            set_aside(message, "no_patient_key", "the event has no patient key", batch)
            return "dead_lettered"
        state = patients.get(key) or PatientState(History(), None)
        duplicate = state.history.has_applied(decoded)
        suppressed_before = state.history.suppressed_repeats
        try:
            emitted = apply(state.history, decoded, rules, datetime.now(UTC))
            stored, shrunk = encode_within(state.history, settings.classifier_state_limit_bytes)
        except StateTooLargeError as error:
            _restore(patients, key, state)
            log.error("dead-lettering a %s event: the patient's history cannot fit", kind)
            set_aside(message, "patient_state_limit", str(error), batch)
            return "dead_lettered"
        except Exception as error:  # one patient's event must not stop the others
            _restore(patients, key, state)
            log.error(
                "dead-lettering a %s event the engine could not apply: %s", kind, _where(error)
            )
            set_aside(
                message,
                "engine_error",
                f"the classifier could not apply it ({type(error).__name__})",
                batch,
            )
            return "dead_lettered"
        if shrunk:
            SHRUNK.inc()
            log.warning("a patient's history outgrew its record; its oldest half was forgotten")
        for alert in emitted:
            batch.writes.add(alerts, key, alert.model_dump_json().encode())
            alerted[alert.kind].inc()
        state.stored = stored
        patients[key] = state
        batch.records[key, message.partition] = stored
        SUPPRESSED.inc(max(0, state.history.suppressed_repeats - suppressed_before))
        return "duplicate" if duplicate else "evaluated"

    async def classify_batch(events: Sequence[Any], writes: RecordBatches) -> None:
        """Apply a batch of events in order, then make its writes durable (alerts and dead
        letters before the patients' records): only then may faust commit the batch's offsets
        (it acks the events when this returns)."""
        batch = Batch(writes)
        for event in events:
            message = event.message
            kind = "lab_result" if message.topic == lab_results else "clinical_context"
            patients = await store.patients(message.partition)
            outcome = classify_one(message, kind, patients, batch)
            counted[kind, outcome].inc()
        await batch.make_durable(state_topic)

    @app.agent(patient_events)
    async def classify(stream: Any) -> None:
        """Classify batch after batch, writing through a producer of the agent's own (acks=all,
        idempotent where the broker allows), stopped, its writes flushed, when the stream ends."""
        try:
            producer = await start_durable_producer(
                bootstrap_servers,
                f"{app_id}-writer",
                settings.kafka_produce_timeout_seconds,
                batch_bytes=WRITE_BATCH_BYTES,
            )
        except Exception as error:
            _exit_not_durable(error)
        try:
            async for events in stream.take_events(BATCH_EVENTS, BATCH_SECONDS):
                try:
                    await classify_batch(events, RecordBatches(producer))
                except BaseException as error:  # cancelled mid-batch too: take_events would
                    _exit_not_durable(error)  # ack the batch on its way out, and faust commit it
        finally:
            await producer.stop()

    @app.timer(interval=LAG_POLL_SECONDS)  # type: ignore[untyped-decorator]  # faust has no stub
    async def poll_lag() -> None:
        """The lag of this worker's partitions from the broker (log end minus the group's
        committed offset): it grows while the worker is stalled. Unanswered: kept as it was."""
        try:
            mine = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
        except ConsumerNotStarted:
            return
        try:
            lag = await group_lag(bootstrap_servers, app_id, (tp for tp in mine if tp[0] in inputs))
        except (KafkaError, TimeoutError, OSError) as error:
            log.warning("consumer lag not read from the broker (%s)", type(error).__name__)
            return
        for (topic, partition), behind in lag.items():
            kind = "lab_result" if topic == lab_results else "clinical_context"
            LAG.labels(input=kind, partition=str(partition)).set(behind)

    @app.page("/healthz")
    async def healthz(view: Any, request: Any) -> Any:
        return view.json({"status": "ok", "service": "classifier"})

    @app.page("/readyz")
    async def readyz(view: Any, request: Any) -> Any:
        ready = is_ready(app, store)
        return view.json(
            {"status": "ready" if ready else "not ready", "service": "classifier"},
            status=200 if ready else 503,
        )

    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type=, so the header is set whole.
        return view.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def is_ready(app: faust.App, store: PatientStore) -> bool:
    """Ready once the group gave this worker partitions and their histories are read back; not
    while faust's consumer has yet to start (asking it then raises ConsumerNotStarted)."""
    try:
        assigned = bool(app.consumer.assignment())
    except ConsumerNotStarted:
        return False
    return assigned and not app.rebalancing and store.ready


def _where(error: BaseException) -> str:
    """The exception's type and the line that raised it: never its text or a traceback, which
    may quote the event (pydantic's input_value holds names and birth dates)."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{place}"


def _exit_not_durable(error: BaseException) -> NoReturn:
    """Kafka did not take a write: exit, so that the supervisor restarts the worker from the last
    committed offset, never from a state the changelog does not have."""
    log.critical(
        "an event could not be made durable (%s); exiting so that the worker restarts from the "
        "last committed offset",
        _where(error),
    )
    logging.shutdown()
    os._exit(_EXIT_NOT_DURABLE)


def _restore(patients: Patients, key: bytes, state: PatientState) -> None:
    """Put the patient back as the changelog has them."""
    if state.stored is None:
        patients.pop(key, None)
    else:
        patients[key] = state.restored()


def run_worker(app: faust.App, log_level: str) -> None:
    """Run until SIGTERM/SIGINT; faust owns the event loop and stops the app cleanly."""
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    # At WARNING and above faust's terminal spinner sets the root logger to DEBUG, so that every
    # debug line of the Kafka client (two per record produced) is formed, then dropped.
    worker.spinner = None
    worker.execute_from_commandline()
