"""The one place where ingest outcomes meet Kafka: publish, count, dead-letter.

Every feed (HL7 v2 over MLLP, FHIR and JSON over HTTP) hands its outcomes for one input to
`IngestPipeline.accept`, which returns only once Kafka has acknowledged every event and, if
anything was refused, the dead letter holding the raw input. It raises KafkaError or
TimeoutError otherwise, and then the sender must not be acknowledged.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter

from schemas import LabResult, Topic
from services.config import Settings
from services.ingest.codes import FeedContext
from services.ingest.deadletter import Source, dead_letter
from services.ingest.outcomes import Event, Filter, Outcome, Publish, Rejection
from services.kafka.producer import EventPublisher

log = logging.getLogger(__name__)

INPUTS = Counter(
    "plateletwatch_ingest_inputs_total",
    "Inputs (messages, bodies) received, by feed and by what became of them.",
    ["source", "outcome"],
)
ENTRIES = Counter(
    "plateletwatch_ingest_entries_total",
    "Results and treatments within inputs, by feed and outcome (published, filtered, rejected).",
    ["source", "outcome"],
)
DEAD_LETTERS = Counter(
    "plateletwatch_ingest_dead_letters_total",
    "Inputs written to the dead-letter topic, by feed and first reason.",
    ["source", "reason"],
)


@dataclass(frozen=True)
class Accepted:
    published: tuple[Event, ...]
    filtered: int
    rejections: tuple[Rejection, ...]
    dead_letter_id: str | None

    @property
    def outcome(self) -> str:
        if self.rejections:
            return "dead_lettered"
        return "published" if self.published else "filtered"


class IngestPipeline:
    def __init__(self, settings: Settings, publisher: EventPublisher) -> None:
        self._settings = settings
        self._publisher = publisher

    @property
    def ready(self) -> bool:
        return self._publisher.started

    def context(self) -> FeedContext:
        """Site configuration for parsing one input received now."""
        return FeedContext.for_site(self._settings, datetime.now(UTC))

    async def accept(
        self,
        source: Source,
        raw: bytes,
        outcomes: Sequence[Outcome],
        content_type: str | None,
        received_at: datetime,
    ) -> Accepted:
        """Publish the events, then dead-letter the input if any part was refused."""
        events = tuple(o.event for o in outcomes if isinstance(o, Publish))
        rejections = tuple(o for o in outcomes if isinstance(o, Rejection))
        filtered = sum(isinstance(o, Filter) for o in outcomes)
        try:
            await asyncio.gather(*(self._publish(event) for event in events))
            letter_id = None
            if rejections:
                letter = dead_letter(raw, source, rejections, content_type, received_at)
                await self._publisher.publish(
                    self._settings.topic(Topic.INGEST_DEADLETTER), None, letter
                )
                letter_id = letter.event_id
        except Exception:
            INPUTS.labels(source=source, outcome="unavailable").inc()
            raise
        accepted = Accepted(events, filtered, rejections, letter_id)
        INPUTS.labels(source=source, outcome=accepted.outcome).inc()
        ENTRIES.labels(source=source, outcome="published").inc(len(events))
        ENTRIES.labels(source=source, outcome="filtered").inc(filtered)
        ENTRIES.labels(source=source, outcome="rejected").inc(len(rejections))
        if rejections:
            DEAD_LETTERS.labels(source=source, reason=rejections[0].reason.value).inc()
            log.info("%s input dead-lettered: %s", source, rejections[0].reason.value)
        return accepted

    async def _publish(self, event: Event) -> None:
        topic = Topic.LAB_RESULTS if isinstance(event, LabResult) else Topic.CLINICAL_CONTEXT
        await self._publisher.publish(
            self._settings.topic(topic), event.patient.identifier.key, event
        )
