"""Classifying a batch of events: decode, call the engine, keep the alerts and records to write.

The lab results and clinical context of a patient arrive on co-partitioned topics and are applied
in order to one history. The histories are the classifier's own (services/classifier/store.py):
one record per patient in a compacted changelog, written to the partition of the events it came
from, read back whole when a partition is assigned. `Classifier.classify_batch` applies a batch
(the patients' histories stay live in memory), keeping each event's alerts in order and each
patient's new record once, then makes the batch durable: the alerts and dead letters first
(one record batch per partition, services/kafka/batches.py), then, once Kafka has acknowledged
them, the records (a record never runs ahead of the alerts it caused). Only then may the
consumer (services/classifier/service.py) commit the batch's offsets. After a crash an event
may be applied again: the engine recognises it, and a re-sent alert carries the same alert_id,
the notifier's dedupe key. An event that cannot be decoded or applied, or that would grow the
history past its limit, is dead-lettered and the patient's state stays as it was.
"""

import asyncio
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter
from pydantic import ValidationError

import services.build_info  # noqa: F401 - registers plateletwatch_build_info
from schemas import AlertKind, LabResult, Topic, clinical_context_adapter
from services.classifier.dead_letters import classifier_dead_letter
from services.classifier.engine import History, apply
from services.classifier.rules import Rules
from services.classifier.state import PatientState, StateTooLargeError, encode_within
from services.classifier.store import Patients, PatientStore
from services.config import Settings

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


class Event(Protocol):
    """A consumed record, as aiokafka gives it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


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


class Classifier:
    """Applies batches of events to the histories in `store` and makes what they cause durable."""

    def __init__(
        self, settings: Settings, rules: Rules, store: PatientStore, state_topic: str
    ) -> None:
        self._rules = rules
        self._store = store
        self._state_topic = state_topic
        self._limit_bytes = settings.classifier_state_limit_bytes
        self._lab_results = settings.topic(Topic.LAB_RESULTS)
        self._alerts = settings.topic(Topic.PLATELET_ALERTS)
        self._dead_letters = settings.topic(Topic.CLASSIFIER_DEADLETTER)

    async def classify_batch(self, events: Sequence[Event], writes: Writes) -> None:
        """Apply `events` in order, then make their writes durable (alerts and dead letters
        before the patients' records). Raises what Kafka raised if a write is refused: the
        batch must then not be committed."""
        batch = Batch(writes)
        for event in events:
            kind = "lab_result" if event.topic == self._lab_results else "clinical_context"
            patients = await self._store.patients(event.partition)
            counted[kind, self._classify_one(event, kind, patients, batch)].inc()
        await batch.make_durable(self._state_topic)

    def _classify_one(self, event: Event, kind: str, patients: Patients, batch: Batch) -> str:
        """Apply one event (`kind`: lab_result or clinical_context); return its outcome for the
        events counter. Its alerts or dead letter, and the patient's new record, go in `batch`."""
        try:
            decoded = (
                LabResult.model_validate_json(event.value or b"")
                if kind == "lab_result"
                else clinical_context_adapter.validate_json(event.value or b"")
            )
        except ValidationError as error:
            log.error(
                "dead-lettering an undecodable %s event: %d errors", kind, error.error_count()
            )
            self._set_aside(
                event,
                "undecodable_event",
                f"not a {kind} event ({error.error_count()} errors)",
                batch,
            )
            return "dead_lettered"
        key = event.key
        if not key:
            self._set_aside(event, "no_patient_key", "the event has no patient key", batch)
            return "dead_lettered"
        state = patients.get(key) or PatientState(History(), None)
        duplicate = state.history.has_applied(decoded)
        suppressed_before = state.history.suppressed_repeats
        try:
            emitted = apply(state.history, decoded, self._rules, datetime.now(UTC))
            stored, shrunk = encode_within(state.history, self._limit_bytes)
        except StateTooLargeError as error:
            _restore(patients, key, state)
            log.error("dead-lettering a %s event: the patient's history cannot fit", kind)
            self._set_aside(event, "patient_state_limit", str(error), batch)
            return "dead_lettered"
        except Exception as error:  # one patient's event must not stop the others
            _restore(patients, key, state)
            log.error(
                "dead-lettering a %s event the engine could not apply: %s", kind, where(error)
            )
            self._set_aside(
                event,
                "engine_error",
                f"the classifier could not apply it ({type(error).__name__})",
                batch,
            )
            return "dead_lettered"
        if shrunk:
            SHRUNK.inc()
            log.warning("a patient's history outgrew its record; its oldest half was forgotten")
        for alert in emitted:
            batch.writes.add(self._alerts, key, alert.model_dump_json().encode())
            alerted[alert.kind].inc()
        state.stored = stored
        patients[key] = state
        batch.records[key, event.partition] = stored
        SUPPRESSED.inc(max(0, state.history.suppressed_repeats - suppressed_before))
        return "duplicate" if duplicate else "evaluated"

    def _set_aside(self, event: Event, reason_code: str, reason: str, batch: Batch) -> None:
        raw = event.value or b""  # a record with no value (a deletion marker) too
        letter = classifier_dead_letter(raw, event.topic, reason_code, reason, datetime.now(UTC))
        batch.writes.add(self._dead_letters, event.key, letter.model_dump_json().encode())
        dead_lettered[reason_code].inc()


def where(error: BaseException) -> str:
    """The exception's type and the line that raised it: never its text or a traceback, which
    may quote the event (pydantic's input_value holds names and birth dates)."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{place}"


def _restore(patients: Patients, key: bytes, state: PatientState) -> None:
    """Put the patient back as the changelog has them."""
    if state.stored is None:
        patients.pop(key, None)
    else:
        patients[key] = state.restored()
