"""HL7 v2 over MLLP: framing, the ingest server, and the client behind `plateletwatch send`.

A frame is <VT> message <FS><CR>. The server answers every frame with exactly one ACK, in order,
on the connection it came from (HL7 v2.5 chapter 2, original acknowledgment mode):

- AA only after Kafka acknowledged every event of the message;
- AE with ERR segments when content was refused (an OBX, DG1 or PRB that cannot be read
  safely, a message too large, a message a reader failed on): the message is dead-lettered, and
  the sender must not resend it unchanged;
- AR when the message as such is not accepted (a type dispatch.READERS has no reader for, an
  unsupported version, no readable MSH), or when Kafka cannot take it: then nothing was stored
  and the sender resends later.

A frame larger than the limit is read to its end block without being kept (its first 64 kB,
size and SHA-256 are dead-lettered) and answered AE, so the stream stays in step. Connections
are closed when idle too long, when a frame does not finish in time, and at once beyond the
connection limit; together the limits bound what ingest holds to about
max_connections times max_message_bytes.
"""

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from services.ingest.deadletter import KEPT_BYTES_WHEN_TOO_LARGE, RawInput
from services.ingest.hl7v2.ack import ack_code, build_ack, refused_whole
from services.ingest.hl7v2.dispatch import Hl7Result, read_message
from services.ingest.outcomes import Rejection, RejectReason
from services.ingest.pipeline import COULD_NOT_PROCESS, IngestPipeline, read_safely
from services.ingest.treatments import TreatmentTable

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"

ACKS = Counter(
    "plateletwatch_ingest_mllp_acks_total", "ACKs sent over MLLP, by acknowledgment code.", ["code"]
)
CONNECTIONS = Gauge("plateletwatch_ingest_mllp_connections", "Open MLLP connections.")
CLOSED = Counter(
    "plateletwatch_ingest_mllp_connections_closed_total",
    "MLLP connections closed by ingest, by why: too_many_connections (refused on arrival), "
    "idle, frame_timeout (a frame started but not finished in time).",
    ["reason"],
)


@dataclass
class _Skipping:
    """The frame being read past the limit: counted and hashed, only its first bytes kept."""

    head: bytearray = field(default_factory=bytearray)
    size: int = 0
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)

    def take(self, data: bytes | bytearray) -> None:
        room = KEPT_BYTES_WHEN_TOO_LARGE - len(self.head)
        if room > 0:
            self.head.extend(data[:room])
        self.size += len(data)
        self.digest.update(data)

    def done(self) -> RawInput:
        return RawInput(bytes(self.head), self.size, self.digest.hexdigest())


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


@dataclass
class MllpDecoder:
    """Collects bytes as they arrive (frames may be split or several per read); pure.

    Holds at most one frame of `max_message_bytes` (plus one read); a longer frame is skipped to
    its end block and reported as a RawInput: its first bytes, size and hash."""

    max_message_bytes: int
    _buffer: bytearray = field(default_factory=bytearray)
    _skipping: _Skipping | None = None

    @property
    def in_frame(self) -> bool:
        """A frame has started and not yet ended."""
        return self._skipping is not None or self._buffer.startswith(START_BLOCK)

    def feed(self, data: bytes) -> list[bytes | RawInput]:
        """The frames the data finished; bytes outside a frame are ignored."""
        self._buffer.extend(data)
        frames: list[bytes | RawInput] = []
        while True:
            if self._skipping is not None:
                skipped = self._skip()
                if skipped is None:
                    return frames
                frames.append(skipped)
                continue
            start = self._buffer.find(START_BLOCK)
            if start == -1:
                self._buffer.clear()
                return frames
            del self._buffer[:start]
            end = self._buffer.find(END_BLOCK, 1)
            if end == -1:
                if len(self._buffer) - 1 > self.max_message_bytes:
                    del self._buffer[:1]
                    self._skipping = _Skipping()
                    continue
                return frames
            message = bytes(self._buffer[1:end])
            del self._buffer[: end + len(END_BLOCK)]
            if len(message) > self.max_message_bytes:
                skipped_whole = _Skipping()
                skipped_whole.take(message)
                frames.append(skipped_whole.done())
            else:
                frames.append(message)

    def _skip(self) -> RawInput | None:
        """Consume the oversized frame up to its end block, if that has arrived."""
        assert self._skipping is not None
        end = self._buffer.find(END_BLOCK)
        if end == -1:
            # the last byte may be the first half of the end block: keep it for the next read
            keep = 1 if self._buffer.endswith(END_BLOCK[:1]) else 0
            self._skipping.take(self._buffer[: len(self._buffer) - keep])
            del self._buffer[: len(self._buffer) - keep]
            return None
        self._skipping.take(self._buffer[:end])
        del self._buffer[: end + len(END_BLOCK)]
        skipped, self._skipping = self._skipping.done(), None
        return skipped


@dataclass(frozen=True)
class MllpLimits:
    """What one MLLP server holds at most (see above); the site sets them (app.mllp_limits)."""

    max_message_bytes: int
    idle_timeout_seconds: float
    frame_timeout_seconds: float
    max_connections: int


class MllpServer:
    def __init__(
        self,
        pipeline: IngestPipeline,
        host: str,
        port: int,
        limits: MllpLimits,
        treatments: TreatmentTable,
    ) -> None:
        """`treatments` recognises what a pharmacy message (RAS, RDS) says was given."""
        self._pipeline = pipeline
        self._treatments = treatments
        self._host = host
        self._port = port
        self._limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one asked for, or the one chosen for port 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

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
        assert task is not None  # asyncio runs each connection in a task of its own
        if len(self._connections) >= self._limits.max_connections:
            CLOSED.labels(reason="too_many_connections").inc()
            log.warning(
                "refused an MLLP connection: %d open, the limit", self._limits.max_connections
            )
            await _close(writer)
            return
        self._connections.add(task)
        CONNECTIONS.inc()
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # the peer went away, or the server is stopping: nothing left to answer
        finally:
            CONNECTIONS.dec()
            self._connections.discard(task)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer each frame until the peer closes, goes idle, or leaves a frame unfinished."""
        loop = asyncio.get_running_loop()
        decoder = MllpDecoder(self._limits.max_message_bytes)
        frame_started: float | None = None
        while True:
            wait = self._limits.idle_timeout_seconds
            if frame_started is not None:
                frame_deadline = frame_started + self._limits.frame_timeout_seconds
                wait = min(wait, max(frame_deadline - loop.time(), 0.0))
            try:
                data = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                if frame_started is None:
                    reason, limit = "idle", self._limits.idle_timeout_seconds
                else:
                    reason, limit = "frame_timeout", self._limits.frame_timeout_seconds
                CLOSED.labels(reason=reason).inc()
                log.info("closing an MLLP connection (%s: %.0f s)", reason, limit)
                return
            if not data:
                return
            frames = decoder.feed(data)
            for item in frames:
                if isinstance(item, bytes):
                    ack = await self.acknowledge(item)
                else:
                    ack = await self.refuse_oversized(item)
                writer.write(frame(ack))
                await writer.drain()
            if not decoder.in_frame:
                frame_started = None
            elif frames or frame_started is None:
                frame_started = loop.time()

    async def acknowledge(self, message: bytes) -> bytes:
        """Process one message through the pipeline and return its ACK; never raises."""
        context = self._pipeline.context()
        result = read_safely(
            "hl7v2",
            lambda: read_message(message, context, self._treatments),
            lambda rejection: refused_whole(message, rejection),
        )
        try:
            accepted = await self._pipeline.accept(
                "hl7v2", message, result.outcomes, "application/hl7-v2", context.received_at
            )
        except (KafkaError, TimeoutError) as error:
            log.error("Kafka did not acknowledge an HL7 message: %s", type(error).__name__)
            return self._ack(result, "AR", [_STORE_UNAVAILABLE])
        except Exception as error:  # any failure at all: the sender must get an answer
            log.error("an HL7 message could not be processed (%s)", type(error).__name__)
            return await self._refuse(RawInput.whole(message), COULD_NOT_PROCESS)
        return self._ack(result, ack_code(result, accepted.rejections), list(accepted.rejections))

    async def refuse_oversized(self, oversized: RawInput) -> bytes:
        """AE for a frame over the limit, once its first bytes are dead-lettered."""
        limit = self._limits.max_message_bytes
        rejection = Rejection(
            RejectReason.MESSAGE_TOO_LARGE,
            f"message too large ({oversized.size:,} bytes, limit {limit:,}); not stored, "
            "do not resend it unchanged",
            location="MSH",
        )
        return await self._refuse(oversized, rejection)

    async def _refuse(self, raw: RawInput, rejection: Rejection) -> bytes:
        """AE once the input is dead-lettered with `rejection`; AR if it could not be."""
        result = refused_whole(raw.data, rejection)
        context = self._pipeline.context()
        try:
            await self._pipeline.accept(
                "hl7v2", raw, [rejection], "application/hl7-v2", context.received_at
            )
        except Exception as error:  # any failure at all: nothing stored, so resend later
            log.error("an HL7 message could not be dead-lettered (%s)", type(error).__name__)
            return self._ack(result, "AR", [_STORE_UNAVAILABLE])
        return self._ack(result, "AE", [rejection])

    def _ack(self, result: Hl7Result, code: str, problems: list[Rejection]) -> bytes:
        ACKS.labels(code=code).inc()
        now = datetime.now(UTC)
        try:
            return build_ack(result, code, problems, now)
        except Exception as error:  # an MSH too odd to echo: answer with our own header
            log.error("ACK built without the message's header (%s)", type(error).__name__)
            return build_ack(Hl7Result(result.control_id, result.outcomes), code, problems, now)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        await writer.wait_closed()


_STORE_UNAVAILABLE = Rejection(
    RejectReason.STORE_UNAVAILABLE,
    "system unavailable, resend it later: the message could not be stored (Kafka unavailable); "
    "nothing was accepted",
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
            pending: list[bytes | RawInput] = []
            while not pending:
                data = await asyncio.wait_for(reader.read(65536), timeout_seconds)
                if not data:
                    raise ConnectionError("the receiver closed the connection before acknowledging")
                pending = decoder.feed(data)
            for ack in pending:
                if not isinstance(ack, bytes):
                    raise ConnectionError(f"the receiver answered with {ack.size:,} bytes")
                acks.append(ack)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return acks
