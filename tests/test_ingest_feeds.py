"""Ingest against the real broker: MLLP ACK semantics, FHIR and JSON over HTTP, bearer auth,
and a broker that stops and comes back while a sender keeps sending."""

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas import DeadLetter, LabResult, Topic, clinical_context_adapter
from services.config import Settings
from services.ingest.hl7v2.message import parse
from services.ingest.hl7v2.mllp import END_BLOCK, frame, send_messages
from services.ingest.http_api import create_app
from services.ingest.pipeline import IngestPipeline
from services.ingest.treatments import load_treatment_table
from services.kafka.admin import ensure_topics
from services.kafka.broker import EmbeddedTansu
from services.kafka.producer import EventPublisher
from tests.conftest import AUTH, consume_until, read_topic, wait_for
from tests.test_hl7 import message, platelet_obx

pytestmark = pytest.mark.integration


def numbered(number: int, value: str = "12", unit: str = "10*9/L") -> bytes:
    """A platelet ORU whose order and control id carry `number`, so each is a distinct result."""
    raw = message(platelet_obx(value=value, unit=unit)).decode()
    return (
        raw.replace("FL-77^LAB", f"FL-{number}^LAB").replace("MSG0001", f"MSG{number:04d}").encode()
    )


def ack_code(ack: bytes) -> str:
    msa = parse(ack).first("MSA")
    assert msa is not None
    return msa.get(1)


@pytest.fixture
def ingest(topics: Settings, start_service) -> Settings:
    service = start_service("ingest", topics)
    service.wait_ready(f"http://{topics.bind_host}:{topics.ingest_port}/readyz")
    return topics


async def test_aa_comes_after_the_event_is_in_kafka(ingest: Settings) -> None:
    (ack,) = await send_messages(ingest.bind_host, ingest.ingest_mllp_port, [numbered(1)])
    assert ack_code(ack) == "AA"
    (stored,) = await read_topic(
        ingest.kafka_bootstrap_servers or "", ingest.topic(Topic.LAB_RESULTS), 1
    )
    result = LabResult.model_validate_json(stored.value)
    assert stored.key == result.patient.identifier.key.encode() == b"GENHOSP|MRN-42"
    assert result.count is not None
    assert result.count.value_10e9_per_l == 12


async def test_many_connections_at_once_each_get_one_ack_per_message(ingest: Settings) -> None:
    connections, per_connection = 12, 5
    batches = [
        [numbered(c * per_connection + m) for m in range(per_connection)]
        for c in range(connections)
    ]
    acks = await asyncio.gather(
        *(send_messages(ingest.bind_host, ingest.ingest_mllp_port, batch) for batch in batches)
    )
    assert [[ack_code(a) for a in batch] for batch in acks] == [
        ["AA"] * per_connection
    ] * connections
    stored = await read_topic(
        ingest.kafka_bootstrap_servers or "",
        ingest.topic(Topic.LAB_RESULTS),
        connections * per_connection,
    )
    assert len({LabResult.model_validate_json(m.value).result_id for m in stored}) == 60


async def test_frames_trickling_in_byte_by_byte(ingest: Settings) -> None:
    reader, writer = await asyncio.open_connection(ingest.bind_host, ingest.ingest_mllp_port)
    data = frame(numbered(1)) + frame(numbered(2))
    for i in range(0, len(data), 7):
        writer.write(data[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.001)
    acks = [await reader.readuntil(END_BLOCK) for _ in range(2)]
    writer.close()
    assert [ack_code(a.strip(b"\x0b\x1c\r")) for a in acks] == ["AA", "AA"]


async def test_a_refused_result_gets_ae_with_err_and_is_dead_lettered(ingest: Settings) -> None:
    raw = numbered(3, unit="mg/dL")
    (ack,) = await send_messages(ingest.bind_host, ingest.ingest_mllp_port, [raw])
    parsed = parse(ack)
    assert ack_code(ack) == "AE"
    assert "mg/dL" in parsed.all("ERR")[0].get(8)
    (letter,) = await read_topic(
        ingest.kafka_bootstrap_servers or "", ingest.topic(Topic.INGEST_DEADLETTER), 1
    )
    dead = DeadLetter.model_validate_json(letter.value)
    assert (dead.source, dead.reason_code, dead.raw_payload.encode()) == (
        "hl7v2",
        "unknown_unit",
        raw,
    )


async def test_an_oversized_frame_is_refused_ae_and_the_connection_goes_on(
    topics: Settings, start_service
) -> None:
    settings = topics.model_copy(update={"ingest_mllp_max_message_bytes": 2048})
    start_service("ingest", settings).wait_ready(
        f"http://{settings.bind_host}:{settings.ingest_port}/readyz"
    )
    big = numbered(1) + b"\rNTE|1||" + b"x" * 4096
    acks = await send_messages(settings.bind_host, settings.ingest_mllp_port, [big, numbered(2)])
    assert [ack_code(ack) for ack in acks] == ["AE", "AA"]
    assert f"too large ({len(big):,} bytes, limit 2,048)" in parse(acks[0]).all("ERR")[0].get(8)
    (letter,) = await read_topic(
        settings.kafka_bootstrap_servers or "", settings.topic(Topic.INGEST_DEADLETTER), 1
    )
    assert DeadLetter.model_validate_json(letter.value).reason_code == "message_too_large"


async def test_an_idle_connection_is_closed(topics: Settings, start_service) -> None:
    settings = topics.model_copy(update={"ingest_mllp_idle_timeout_seconds": 0.5})
    start_service("ingest", settings).wait_ready(
        f"http://{settings.bind_host}:{settings.ingest_port}/readyz"
    )
    reader, writer = await asyncio.open_connection(settings.bind_host, settings.ingest_mllp_port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_http_feeds_need_a_bearer_token(ingest: Settings, example_result: bytes) -> None:
    base = f"http://{ingest.bind_host}:{ingest.ingest_port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/v1/lab-results", "/v1/clinical-context", "/fhir"):
            missing = await client.post(path, content=example_result)
            wrong = await client.post(
                path, content=example_result, headers={"Authorization": "Bearer x"}
            )
            assert (missing.status_code, wrong.status_code) == (401, 401), path
            assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 404  # PLATELETWATCH_API_DOCS


def test_the_api_is_described_when_docs_are_enabled() -> None:
    settings = Settings(api_docs=True)
    pipeline = IngestPipeline(settings, EventPublisher("127.0.0.1:1", "docs", 1))

    async def nothing() -> None:
        return None

    app = create_app(settings, pipeline, load_treatment_table(), nothing, nothing)
    assert {"/v1/lab-results", "/v1/clinical-context", "/fhir"} <= set(app.openapi()["paths"])


async def test_fhir_bundle_answers_per_entry_and_context_is_published(ingest: Settings) -> None:
    from tests.test_fhir import PATIENT, bundle, observation

    base = f"http://{ingest.bind_host}:{ingest.ingest_port}"
    allergy = {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": "Patient/p1"},
        "reaction": [{}],
    }
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"text": "Laparoscopic splenectomy"},
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2026-10-01T09:00:00Z",
    }
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as client:
        response = await client.post(
            "/fhir", json=bundle(PATIENT, allergy, observation(), procedure)
        )
        context = await client.post(
            "/v1/clinical-context",
            json={
                "patient": {"identifier": {"authority": "HOSP", "mrn": "42"}},
                "context_id": "MAR-9",
                "name": "Privigen 1 g/kg",
                "started_at": "2026-11-20T10:00:00Z",
            },
        )
    assert response.status_code == 202, response.text
    assert [e["outcome"] for e in response.json()["entries"]] == [
        "filtered",
        "filtered",
        "published",
        "published",
    ]
    assert context.status_code == 202
    servers = ingest.kafka_bootstrap_servers or ""
    events = await read_topic(servers, ingest.topic(Topic.CLINICAL_CONTEXT), 2)
    categories = sorted(clinical_context_adapter.validate_json(m.value).category for m in events)
    assert categories == ["ivig", "splenectomy"]
    assert len(await read_topic(servers, ingest.topic(Topic.LAB_RESULTS), 1)) == 1


@dataclass
class _Sent:
    number: int
    code: str
    sent_at: float
    acked_at: float


@pytest.mark.one_broker(reason="loses a Tansu broker of its own; the session broker plays no part")
async def test_broker_stopped_and_restarted_while_a_sender_keeps_sending(
    settings: Settings, start_service, tmp_path: Path
) -> None:
    """AR (never AA) while Kafka is down; the sender resends; everything AA'd is stored."""
    broker = EmbeddedTansu()
    broker.start()
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_produce_timeout_seconds": 2,
        }
    )
    try:
        await ensure_topics(settings, broker.bootstrap_servers, create=True)
        service = start_service("ingest", settings)
        service.wait_ready(f"http://{settings.bind_host}:{settings.ingest_port}/readyz")
        log: list[_Sent] = []
        enough = asyncio.Event()

        async def sender() -> None:
            """Sends numbered messages every 20 ms until told to stop, resending on anything
            but AA, as interface engines do."""
            number = 0
            while not enough.is_set():
                started = time.monotonic()
                try:
                    (ack,) = await send_messages(
                        settings.bind_host, settings.ingest_mllp_port, [numbered(number)], 30
                    )
                    code = ack_code(ack)
                except (ConnectionError, TimeoutError):
                    code = "no-ack"
                log.append(_Sent(number, code, started, time.monotonic()))
                number += code == "AA"
                await asyncio.sleep(0.02)

        task = asyncio.create_task(sender())
        await wait_for(lambda: sum(s.code == "AA" for s in log) >= 10, 60, "ten AAs")
        broker.stop()
        stopped_at = time.monotonic()
        await wait_for(
            lambda: any(s.code == "AR" and s.sent_at > stopped_at for s in log), 30, "an AR"
        )
        restarting_at = time.monotonic()
        broker = EmbeddedTansu(port=broker.port)  # same address, empty memory storage
        broker.start()
        await ensure_topics(settings, broker.bootstrap_servers, create=True)
        restarted_at = time.monotonic()
        await wait_for(
            lambda: sum(s.code == "AA" and s.acked_at > restarted_at for s in log) >= 10,
            60,
            "ten AAs after the restart",
        )
        enough.set()
        await task
        during_outage = [s for s in log if stopped_at < s.sent_at and s.acked_at < restarting_at]
        assert during_outage, "the sender should have been refused while Kafka was down"
        assert {s.code for s in during_outage} <= {"AR", "no-ack"}, during_outage
        after = [s.number for s in log if s.code == "AA" and s.acked_at > restarted_at]
        assert after == list(range(after[0], after[0] + len(after)))  # none skipped
        resent = {s.number for s in log if s.code != "AA"}
        assert resent <= {s.number for s in log if s.code == "AA"}  # every refusal resent to AA
        # Every AA'd message is stored. A write refused with AR may still have landed once
        # the broker returned; the sender resent it and its event_id lets consumers dedupe.
        acknowledged = {f"FL-{n}^LAB|LN:777-3|" for n in after}
        stored: set[str] = set()

        def holds_every_acknowledged(record: Any) -> bool:
            stored.add(LabResult.model_validate_json(record.value).result_id)
            return acknowledged <= stored

        await consume_until(
            broker.bootstrap_servers, settings.topic(Topic.LAB_RESULTS), holds_every_acknowledged
        )
        assert stored <= {f"FL-{s.number}^LAB|LN:777-3|" for s in log}
        assert service.process.poll() is None
    finally:
        broker.stop()
