"""The pipeline against the real broker: an entry too large for Kafka is a permanent refusal, an
input too large to dead-letter whole is kept as its first bytes, a broker that does not answer is
an outage; and a reader that fails refuses."""

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka.errors import KafkaError

from schemas import DeadLetter, Topic
from services.ingest.deadletter import KEPT_BYTES_WHEN_TOO_LARGE
from services.ingest.json_lab import classify_submission
from services.ingest.outcomes import Filter, Publish, Rejection, RejectReason
from services.ingest.pipeline import MAX_ERRORS_KEPT, IngestPipeline, read_safely
from tests.conftest import REPO, Kafka, wait_for

RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
EXAMPLE = (REPO / "examples" / "lab-result-critical.json").read_bytes()


def pipeline(kafka: Kafka) -> IngestPipeline:
    return IngestPipeline(kafka.settings, kafka.publisher)


def publish_of(raw: bytes, kafka: Kafka) -> Publish:
    outcome = classify_submission(raw, pipeline(kafka).context())
    assert isinstance(outcome, Publish)
    return outcome


def too_large(publish: Publish, result_id_bytes: int) -> Publish:
    """The event with a result id longer than ingest's readers let through (they refuse ids
    over 200 characters): the pipeline's last line of defence, should any field grow past
    what Kafka takes."""
    return Publish(publish.event.model_copy(update={"result_id": "X" * result_id_bytes}))


@pytest.mark.integration
async def test_an_event_too_large_for_kafka_is_refused_for_good_and_its_input_dead_lettered(
    kafka: Kafka,
) -> None:
    huge_id = EXAMPLE.replace(b"LAB-2026-000123-PLT", b"X" * 1_100_000)
    huge = too_large(publish_of(EXAMPLE, kafka), 1_100_000)
    accepted = await pipeline(kafka).accept(
        "json", huge_id, [huge, Filter("x")], "application/json", RECEIVED
    )
    (rejection,) = accepted.rejections
    assert rejection.reason is RejectReason.MESSAGE_TOO_LARGE
    assert "too large" in rejection.message
    assert isinstance(accepted.outcomes[1], Filter)
    assert await kafka.records(Topic.LAB_RESULTS) == []
    (record,) = await kafka.records(Topic.INGEST_DEADLETTER)
    letter = DeadLetter.model_validate_json(record.value)
    assert accepted.dead_letter_id == letter.event_id
    # the input itself is too large to keep whole: its first 64 kB, its size and hash
    assert len(letter.raw_payload) == KEPT_BYTES_WHEN_TOO_LARGE
    digest = hashlib.sha256(huge_id).hexdigest()
    assert f"{len(huge_id):,} bytes" in letter.reason
    assert digest in letter.reason
    headers = {name: value.decode() for name, value in record.headers}
    assert headers == {"raw-size": str(len(huge_id)), "raw-sha256": digest}


@pytest.mark.integration
async def test_the_other_events_of_the_input_are_still_published(kafka: Kafka) -> None:
    small = publish_of(EXAMPLE, kafka)
    huge = too_large(small, 2_000_000)
    accepted = await pipeline(kafka).accept("json", b"{}", [small, huge], None, RECEIVED)
    assert accepted.published == (small.event,)
    assert [type(o) for o in accepted.outcomes] == [Publish, Rejection]
    (stored,) = await kafka.records(Topic.LAB_RESULTS)
    assert stored.value == small.event.model_dump_json().encode()


@pytest.mark.integration
@pytest.mark.one_broker(reason="loses a Tansu broker of its own; the session broker plays no part")
async def test_a_broker_that_does_not_answer_is_an_outage_not_a_refusal(
    kafka_to_lose: Kafka, lose_broker: Callable[[], None]
) -> None:
    lost = pipeline(kafka_to_lose)
    assert lost.ready
    lose_broker()
    with pytest.raises((KafkaError, TimeoutError)):
        await lost.accept("json", EXAMPLE, [publish_of(EXAMPLE, kafka_to_lose)], None, RECEIVED)
    await wait_for(lambda: not lost.ready, 10, "the pipeline to be not ready")


def test_a_reader_that_fails_refuses_the_input_and_logs_only_the_error_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def crash() -> list[object]:
        raise ValueError("Jane Planted-Doe born 1931-02-03")

    caplog.set_level(logging.DEBUG)
    (rejection,) = read_safely("fhir", crash, lambda rejection: [rejection])
    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectReason.COULD_NOT_READ
    assert "ValueError" in caplog.text
    assert "Planted" not in caplog.text
    assert "1931" not in caplog.text


@pytest.mark.integration
async def test_a_dead_letter_too_large_keeps_its_first_field_errors_only(kafka: Kafka) -> None:
    errors = tuple({"loc": f"entry[{i}].code", "msg": "x" * 100} for i in range(20_000))
    refused = Rejection(RejectReason.INVALID_FHIR, "invalid Observation", errors)
    await pipeline(kafka).accept("fhir", b"{}", [refused], None, RECEIVED)
    (letter,) = await kafka.dead_letters()
    assert letter.errors == errors[:MAX_ERRORS_KEPT]
