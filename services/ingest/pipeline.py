"""The one place where ingest outcomes meet Kafka: publish, count, dead-letter.

Every feed (HL7 v2 over MLLP, FHIR and JSON over HTTP) reads one input with `read_safely` (a
reader that fails unexpectedly refuses the input instead of failing the request) and hands its
outcomes to `IngestPipeline.accept`, which returns only once Kafka has acknowledged every event
and, if anything was refused, the dead letter holding the raw input. An event Kafka refuses for
its size becomes a refusal of that entry (permanent); an input too large to dead-letter whole is
dead-lettered as its first bytes with its size and SHA-256. `accept` raises KafkaError or
TimeoutError when the broker does not answer, and then the sender must not be acknowledged.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar, get_args

from prometheus_client import Counter
from pydantic import BaseModel

from schemas import LabResult, Source, Topic
from services.config import Settings
from services.ingest.codes import FeedContext
from services.ingest.deadletter import KEPT_BYTES_WHEN_TOO_LARGE, RawInput, dead_letter
from services.ingest.outcomes import Event, Filter, Outcome, Publish, Rejection, RejectReason
from services.ingest.site import site_context
from services.kafka.producer import EventTooLargeError

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
READER_FAILURES = Counter(
    "plateletwatch_ingest_reader_failures_total",
    "Inputs a reader failed on unexpectedly (refused and dead-lettered), by feed.",
    ["source"],
)
for _source in get_args(Source):
    READER_FAILURES.labels(source=_source)  # at 0 from the start: the alert rule sees the first

# A dead letter too large for Kafka keeps the first 64 kB of its input and this many field errors.
MAX_ERRORS_KEPT = 100

T = TypeVar("T")


class Publisher(Protocol):
    """What the pipeline needs of Kafka (services.kafka.producer.EventPublisher)."""

    @property
    def broker_reachable(self) -> bool: ...

    async def publish(
        self, topic: str, key: str | None, event: BaseModel, headers: dict[str, str] | None = None
    ) -> None: ...


def read_safely(source: Source, read: Callable[[], T], refuse: Callable[[Rejection], T]) -> T:
    """`read()`, or, if it raises anything, `refuse` with a COULD_NOT_READ rejection. Only the
    exception's type is logged: its text may quote the input (a name, a birth date)."""
    try:
        return read()
    except Exception as error:  # any failure at all: every input must get an answer
        READER_FAILURES.labels(source=source).inc()
        log.error("a %s input could not be read (%s); refused", source, type(error).__name__)
        return refuse(
            Rejection(
                RejectReason.COULD_NOT_READ,
                "the input could not be read (internal error); it was kept for the integration "
                "team: do not resend it unchanged",
            )
        )


# The refusal of an input the pipeline failed on after reading it (answered, dead-lettered).
COULD_NOT_PROCESS = Rejection(
    RejectReason.COULD_NOT_READ,
    "the input could not be processed (internal error); it was kept for the integration team: "
    "do not resend it unchanged",
)


@dataclass(frozen=True)
class Accepted:
    """What became of one input: `outcomes` holds one final outcome per entry, in order (an
    entry Kafka refused for its size is a Rejection here)."""

    outcomes: tuple[Outcome, ...]
    dead_letter_id: str | None

    @property
    def published(self) -> tuple[Event, ...]:
        return tuple(o.event for o in self.outcomes if isinstance(o, Publish))

    @property
    def filtered(self) -> int:
        return sum(isinstance(o, Filter) for o in self.outcomes)

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, Rejection))

    @property
    def outcome(self) -> str:
        if self.rejections:
            return "dead_lettered"
        return "published" if self.published else "filtered"


class IngestPipeline:
    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self._settings = settings
        self._publisher = publisher

    @property
    def ready(self) -> bool:
        """The broker answered lately: inputs can be made durable."""
        return self._publisher.broker_reachable

    def context(self) -> FeedContext:
        """Site configuration for parsing one input received now."""
        return site_context(self._settings, datetime.now(UTC))

    async def accept(
        self,
        source: Source,
        raw: bytes | RawInput,
        outcomes: Sequence[Outcome],
        content_type: str | None,
        received_at: datetime,
    ) -> Accepted:
        """Publish the events, then dead-letter the input if any part was refused."""
        received = raw if isinstance(raw, RawInput) else RawInput.whole(raw)
        try:
            final = await self._publish_all(outcomes)
            rejections = [o for o in final if isinstance(o, Rejection)]
            letter_id = None
            if rejections:
                letter_id = await self._dead_letter(
                    source, received, rejections, content_type, received_at
                )
        except Exception:
            INPUTS.labels(source=source, outcome="unavailable").inc()
            raise
        accepted = Accepted(tuple(final), letter_id)
        INPUTS.labels(source=source, outcome=accepted.outcome).inc()
        ENTRIES.labels(source=source, outcome="published").inc(len(accepted.published))
        ENTRIES.labels(source=source, outcome="filtered").inc(accepted.filtered)
        ENTRIES.labels(source=source, outcome="rejected").inc(len(rejections))
        if rejections:
            DEAD_LETTERS.labels(source=source, reason=rejections[0].reason.value).inc()
            log.info("%s input dead-lettered: %s", source, rejections[0].reason.value)
        return accepted

    async def _publish_all(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Publish every event; one Kafka refuses for its size becomes that entry's Rejection.
        Re-raises the first other failure once every write has finished."""
        events = [o.event for o in outcomes if isinstance(o, Publish)]
        results = iter(
            await asyncio.gather(
                *(self._publish(event) for event in events), return_exceptions=True
            )
        )
        final: list[Outcome] = []
        for outcome in outcomes:
            result = next(results) if isinstance(outcome, Publish) else None
            if isinstance(result, EventTooLargeError):
                final.append(
                    Rejection(
                        RejectReason.MESSAGE_TOO_LARGE,
                        f"result too large to store ({result.size:,} bytes as an event, more than "
                        "Kafka accepts); do not resend it unchanged",
                    )
                )
            elif isinstance(result, BaseException):
                raise result
            else:
                final.append(outcome)
        return final

    async def _dead_letter(
        self,
        source: Source,
        received: RawInput,
        rejections: Sequence[Rejection],
        content_type: str | None,
        received_at: datetime,
    ) -> str:
        """Write the dead letter; an input too large for Kafka is kept as its first bytes."""
        topic = self._settings.topic(Topic.INGEST_DEADLETTER)
        letter = dead_letter(received, source, rejections, content_type, received_at)
        try:
            await self._publisher.publish(topic, None, letter, received.headers)
        except EventTooLargeError:
            shortened = received.first(KEPT_BYTES_WHEN_TOO_LARGE)
            letter = dead_letter(shortened, source, rejections, content_type, received_at)
            letter = letter.model_copy(update={"errors": letter.errors[:MAX_ERRORS_KEPT]})
            await self._publisher.publish(topic, None, letter, received.headers)
        return letter.event_id

    async def _publish(self, event: Event) -> None:
        topic = Topic.LAB_RESULTS if isinstance(event, LabResult) else Topic.CLINICAL_CONTEXT
        await self._publisher.publish(
            self._settings.topic(topic), event.patient.identifier.key, event
        )
