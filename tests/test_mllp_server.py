"""The MLLP server in-process, publishing to the real broker: one ACK per frame, with the code
HL7 v2.5 chapter 2 gives it, whatever happens while handling the message (AR only once the
broker is gone); connection, frame and idle limits."""

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import pytest
from prometheus_client import REGISTRY

from schemas import Topic
from services.ingest.hl7v2.message import Segment, parse
from services.ingest.hl7v2.mllp import END_BLOCK, MllpLimits, MllpServer, frame, send_messages
from services.ingest.pipeline import IngestPipeline
from services.ingest.treatments import load_treatment_table
from tests.conftest import Kafka
from tests.test_hl7 import OBR, message, platelet_obx

pytestmark = pytest.mark.integration

LIMITS = MllpLimits(
    max_message_bytes=64 * 1024,
    idle_timeout_seconds=60,
    frame_timeout_seconds=30,
    max_connections=64,
)


@dataclass
class Running:
    server: MllpServer
    kafka: Kafka

    async def send(self, *messages: bytes) -> list[bytes]:
        return await send_messages("127.0.0.1", self.server.port, list(messages), 10)


async def running(kafka: Kafka, limits: MllpLimits = LIMITS) -> Running:
    pipeline = IngestPipeline(kafka.settings, kafka.publisher)
    server = MllpServer(pipeline, "127.0.0.1", 0, limits, load_treatment_table())
    await server.start()
    return Running(server, kafka)


@pytest.fixture
async def mllp(kafka: Kafka) -> AsyncIterator[Running]:
    started = await running(kafka)
    yield started
    await started.server.stop()


def msa(ack: bytes) -> tuple[str, str, str]:
    segment = parse(ack).first("MSA")
    assert segment is not None
    return segment.get(1), segment.get(2), segment.get(3)


def errors(ack: bytes) -> list[Segment]:
    return parse(ack).all("ERR")


@pytest.mark.one_broker(reason="loses a Tansu broker of its own; the session broker plays no part")
async def test_kafka_down_is_ar_system_unavailable_not_ae(
    kafka_to_lose: Kafka, lose_broker: Callable[[], None]
) -> None:
    mllp = await running(kafka_to_lose)
    try:
        (before,) = await mllp.send(message(platelet_obx()))
        lose_broker()
        (ack,) = await mllp.send(message(platelet_obx()))
    finally:
        await mllp.server.stop()
    assert msa(before)[0] == "AA"
    code, control_id, text = msa(ack)
    assert (code, control_id) == ("AR", "MSG0001")
    assert "unavailable" in text
    (err,) = errors(ack)
    assert err.get(3, 1) == "207"
    assert "resend it later" in err.get(8)


async def test_content_refused_stays_ae(mllp: Running) -> None:
    (ack,) = await mllp.send(message(platelet_obx(unit="mg/dL")))
    assert msa(ack)[0] == "AE"
    assert [letter.reason_code for letter in await mllp.kafka.dead_letters()] == ["unknown_unit"]


async def test_a_reader_failing_unexpectedly_gets_ae_and_the_connection_stays_open(
    mllp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(raw: bytes, context: object, treatments: object) -> None:
        raise RuntimeError("surprise")

    with monkeypatch.context() as patch:
        patch.setattr("services.ingest.hl7v2.mllp.read_message", crash)
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp.server.port)
        writer.write(frame(message(platelet_obx())))
        ack = (await asyncio.wait_for(reader.readuntil(END_BLOCK), 5)).strip(b"\x0b\x1c\r")
    code, control_id, _ = msa(ack)
    assert (code, control_id) == ("AE", "MSG0001")
    (err,) = errors(ack)
    assert err.get(3, 1) == "207"
    (letter,) = await mllp.kafka.dead_letters()
    assert letter.reason_code == "could_not_read"
    assert letter.raw_payload.encode() == message(platelet_obx())
    writer.write(frame(message(platelet_obx())))  # the same connection goes on
    again = (await asyncio.wait_for(reader.readuntil(END_BLOCK), 5)).strip(b"\x0b\x1c\r")
    writer.close()
    assert msa(again)[0] == "AA"


async def test_an_offset_beyond_14_hours_gets_an_answer(mllp: Running) -> None:
    """Measured: this OBX-14 closed the connection with no ACK at all."""
    (ack,) = await mllp.send(message(platelet_obx(obx14="20261125074000+2400")))
    assert msa(ack)[0] == "AE"
    assert len(await mllp.kafka.dead_letters()) == 1


async def test_an_unreadable_frame_is_answered_even_without_msh(mllp: Running) -> None:
    acks = await mllp.send(b"\x00\xff not hl7 at all", message(platelet_obx()))
    assert [msa(ack)[0] for ack in acks] == ["AR", "AA"]


async def test_a_1_mb_result_id_is_ae_for_good_and_dead_lettered_in_part(kafka: Kafka) -> None:
    """A 1.1 MB filler order number (it is in the result's id) within a 2 MB frame limit was
    answered "resend it" forever (more than Kafka takes). Ids are bounded now: AE naming the
    field, never "resend", and the message's first 64 kB dead-lettered (the whole is more than
    a dead letter may hold)."""
    started = await running(kafka, replace(LIMITS, max_message_bytes=2 * 1024 * 1024))
    huge = message(platelet_obx(), obr=OBR.replace("FL-77", "F" * 1_100_000))
    try:
        (ack,) = await started.send(huge)
    finally:
        await started.server.stop()
    code, _, text = msa(ack)
    assert code == "AE"
    assert "OBR-3" in text
    assert "resend" not in text.replace("do not resend", "")
    assert await kafka.records(Topic.LAB_RESULTS) == []
    (letter,) = await kafka.dead_letters()
    assert letter.raw_payload.encode() == huge[: 64 * 1024]


async def test_an_oversized_frame_gets_ae_with_its_size_and_the_stream_stays_in_step(
    mllp: Running,
) -> None:
    big = message(platelet_obx()) + b"\rNTE|1||" + b"x" * 100_000
    acks = await mllp.send(big, message(platelet_obx()))
    assert [msa(ack)[:2] for ack in acks] == [("AE", "MSG0001"), ("AA", "MSG0001")]
    assert f"message too large ({len(big):,} bytes, limit 65,536)" in errors(acks[0])[0].get(8)
    (letter,) = await mllp.kafka.dead_letters()
    assert letter.reason_code == "message_too_large"
    assert letter.raw_payload.encode() == big[: 64 * 1024]
    assert hashlib.sha256(big).hexdigest() in letter.reason


def closed(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "plateletwatch_ingest_mllp_connections_closed_total", {"reason": reason}
    )
    return value or 0.0


async def test_connections_beyond_the_limit_are_closed_at_once_and_counted(kafka: Kafka) -> None:
    started = await running(kafka, replace(LIMITS, max_connections=2))
    refused_before = closed("too_many_connections")
    try:
        held = [await asyncio.open_connection("127.0.0.1", started.server.port) for _ in "ab"]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", started.server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert closed("too_many_connections") == refused_before + 1
        # those within the limit are served
        held_reader, held_writer = held[0]
        held_writer.write(frame(message(platelet_obx())))
        ack = await asyncio.wait_for(held_reader.readuntil(END_BLOCK), 5)
        assert msa(ack.strip(b"\x0b\x1c\r"))[0] == "AA"
        for _, held_writer in held:
            held_writer.close()
    finally:
        await started.server.stop()


async def test_a_frame_not_finished_in_time_closes_the_connection_though_bytes_keep_coming(
    kafka: Kafka,
) -> None:
    started = await running(kafka, replace(LIMITS, frame_timeout_seconds=0.5))
    timeouts_before = closed("frame_timeout")
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", started.server.port)
        writer.write(b"\x0bMSH|")
        began = loop.time()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, with nothing to answer
        elapsed = loop.time() - began
        trickling.cancel()
        writer.close()
        assert 0.4 < elapsed < 3
        assert closed("frame_timeout") == timeouts_before + 1
    finally:
        await started.server.stop()


async def test_an_idle_connection_is_closed_and_counted(kafka: Kafka) -> None:
    started = await running(kafka, replace(LIMITS, idle_timeout_seconds=0.3))
    idle_before = closed("idle")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", started.server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert closed("idle") == idle_before + 1
    finally:
        await started.server.stop()
