"""HL7 v2 over MLLP: framing, the ingest server, and the client behind `plateletwatch send`.

A frame is <VT> message <FS><CR>. The server answers every message with exactly one ACK, in
order, on the connection it came from: AA only after Kafka acknowledged every event of the
message; AE/AR with ERR segments when part of it was refused (and dead-lettered); AE when Kafka
could not take it (nothing stored, the sender must resend). Connections idle longer than the
configured timeout are closed; a frame larger than the limit is refused and the connection closed,
since the stream cannot be resynchronised safely.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from services.ingest.hl7_oru import Hl7Result, build_ack, read_message
from services.ingest.outcomes import Rejection, RejectReason
from services.ingest.pipeline import IngestPipeline

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"

ACKS = Counter(
    "plateletwatch_ingest_mllp_acks_total", "ACKs sent over MLLP, by acknowledgment code.", ["code"]
)
CONNECTIONS = Gauge("plateletwatch_ingest_mllp_connections", "Open MLLP connections.")


class FrameTooLargeError(ValueError):
    """A frame grew past the configured limit before its end block arrived."""


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


@dataclass
class MllpDecoder:
    """Collects bytes as they arrive (frames may be split or several per read); pure."""

    max_message_bytes: int
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        """The complete messages the data finished; bytes outside a frame are ignored."""
        self._buffer.extend(data)
        messages: list[bytes] = []
        while True:
            start = self._buffer.find(START_BLOCK)
            if start == -1:
                self._buffer.clear()
                return messages
            end = self._buffer.find(END_BLOCK, start + 1)
            if end == -1:
                del self._buffer[:start]
                if len(self._buffer) - 1 > self.max_message_bytes:
                    raise FrameTooLargeError(
                        f"message exceeds {self.max_message_bytes} bytes without an end block"
                    )
                return messages
            message = bytes(self._buffer[start + 1 : end])
            del self._buffer[: end + len(END_BLOCK)]
            if len(message) > self.max_message_bytes:
                raise FrameTooLargeError(
                    f"message of {len(message)} bytes exceeds {self.max_message_bytes}"
                )
            messages.append(message)


class MllpServer:
    def __init__(
        self,
        pipeline: IngestPipeline,
        host: str,
        port: int,
        max_message_bytes: int,
        idle_timeout_seconds: float,
    ) -> None:
        self._pipeline = pipeline
        self._host = host
        self._port = port
        self._max_message_bytes = max_message_bytes
        self._idle_timeout = idle_timeout_seconds
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        CONNECTIONS.inc()
        decoder = MllpDecoder(self._max_message_bytes)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self._idle_timeout)
                except TimeoutError:
                    log.info("closing an MLLP connection idle for %.0f s", self._idle_timeout)
                    return
                if not data:
                    return
                try:
                    messages = decoder.feed(data)
                except FrameTooLargeError as error:
                    await self._refuse_oversized(
                        writer, bytes(data[: self._max_message_bytes]), str(error)
                    )
                    return
                for message in messages:
                    writer.write(frame(await self.acknowledge(message)))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            CONNECTIONS.dec()
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def acknowledge(self, message: bytes) -> bytes:
        """Process one message through the pipeline and return its ACK."""
        context = self._pipeline.context()
        result = read_message(message, context)
        try:
            accepted = await self._pipeline.accept(
                "hl7v2", message, result.outcomes, "application/hl7-v2", context.received_at
            )
        except (KafkaError, TimeoutError) as error:
            log.error("Kafka did not acknowledge an HL7 message: %s", type(error).__name__)
            return self._ack(result, "AE", [_STORE_UNAVAILABLE])
        code = "AE" if result.ack_code == "AA" and accepted.rejections else result.ack_code
        return self._ack(result, code, list(accepted.rejections))

    def _ack(self, result: Hl7Result, code: str, problems: list[Rejection]) -> bytes:
        ACKS.labels(code=code).inc()
        return build_ack(result, code, problems, datetime.now(UTC))

    async def _refuse_oversized(
        self, writer: asyncio.StreamWriter, head: bytes, reason: str
    ) -> None:
        rejection = Rejection(RejectReason.MESSAGE_TOO_LARGE, reason, location="MSH")
        result = Hl7Result("", (rejection,))
        context = self._pipeline.context()
        try:
            await self._pipeline.accept(
                "hl7v2", head, [rejection], "application/hl7-v2", context.received_at
            )
            writer.write(frame(self._ack(result, "AR", [rejection])))
        except (KafkaError, TimeoutError):
            writer.write(frame(self._ack(result, "AE", [_STORE_UNAVAILABLE])))
        with contextlib.suppress(ConnectionError):
            await writer.drain()


_STORE_UNAVAILABLE = Rejection(
    RejectReason.STORE_UNAVAILABLE,
    "message not stored (Kafka unavailable); nothing was accepted, resend it",
)


async def send_messages(
    host: str, port: int, messages: list[bytes], timeout_seconds: float = 30.0
) -> list[bytes]:
    """Send each message on one connection and return the ACK for each, in order."""
    reader, writer = await asyncio.open_connection(host, port)
    decoder = MllpDecoder(max_message_bytes=16 * 1024 * 1024)
    acks: list[bytes] = []
    try:
        for message in messages:
            writer.write(frame(message))
            await writer.drain()
            pending: list[bytes] = []
            while not pending:
                data = await asyncio.wait_for(reader.read(65536), timeout_seconds)
                if not data:
                    raise ConnectionError("the receiver closed the connection before acknowledging")
                pending = decoder.feed(data)
            acks.extend(pending)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return acks
