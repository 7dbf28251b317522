"""Ingest throughput: HL7 v2 over MLLP with ACK after the durable write, beside raw producer
throughput measured against the same broker in the same run.

Run with `make bench`; figures are merged into bench-results.json. The broker is chosen as
everywhere else (KAFKA_BOOTSTRAP_SERVERS, testcontainers Kafka, or embedded Tansu), so numbers
from Tansu on a laptop and from a real cluster compare only with that in mind: the file says which.
"""

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.results import record
from services.config import Settings
from services.ingest.codes import FeedContext
from services.ingest.hl7v2.dispatch import read_message
from services.ingest.hl7v2.mllp import END_BLOCK, frame
from services.ingest.treatments import load_treatment_table
from services.kafka.admin import ensure_topics
from services.kafka.broker import free_loopback_port, provide_broker
from services.kafka.producer import EventPublisher
from services.processes import stop_processes, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))

ORU = (
    "MSH|^~\\&|LIS|GENHOSP|PW|PW|20261125081500+0100||ORU^R01^ORU_R01|MSG{n}|P|2.5.1\r"
    "PID|1||MRN-{patient}^^^GENHOSP^MR||DOE^JANE||20120407|F\r"
    "OBR|1|PL-{n}^EHR|FL-{n}^LAB|58410-2^CBC^LN|||20261125074000+0100\r"
    "OBX|1|NM|777-3^Platelets^LN||{value}|10*9/L|150-400|LL|||F\r"
    "OBX|2|NM|718-7^Hemoglobin^LN||9.1|g/dL|12-16|L|||F\r"
)


def oru(n: int) -> bytes:
    return ORU.format(n=n, patient=n % 500, value=5 + n % 300).encode()


async def raw_producer(settings: Settings, servers: str) -> dict[str, float]:
    """The same events ingest would publish, written straight to Kafka with acks=all."""
    context = FeedContext(received_at=datetime.now(UTC), local_zone=UTC)
    treatments = load_treatment_table()
    events = [read_message(oru(n), context, treatments).events[0] for n in range(MESSAGES)]
    publisher = EventPublisher(servers, "bench-raw", settings.kafka_produce_timeout_seconds)
    await publisher.start()
    topic = settings.topic_prefix + "bench.raw"
    try:
        started = time.perf_counter()
        for chunk in range(0, MESSAGES, 200):
            await asyncio.gather(
                *(
                    publisher.publish(topic, e.patient.identifier.key, e)
                    for e in events[chunk : chunk + 200]
                )
            )
        pipelined = MESSAGES / (time.perf_counter() - started)
        started = time.perf_counter()
        sequential_count = min(MESSAGES, 500)
        for event in events[:sequential_count]:
            await publisher.publish(topic, event.patient.identifier.key, event)
        sequential = sequential_count / (time.perf_counter() - started)
    finally:
        await publisher.stop()
    return {"raw_produce_msgs_per_s": pipelined, "raw_produce_sequential_msgs_per_s": sequential}


async def mllp(settings: Settings, connections: int) -> tuple[float, list[float]]:
    """Messages per second over `connections` MLLP connections, each waiting for every ACK."""
    per_connection = MESSAGES // connections
    latencies: list[float] = []

    async def one(offset: int) -> None:
        """One sender on one connection, waiting for each ACK before the next message."""
        reader, writer = await asyncio.open_connection(
            settings.bind_host, settings.ingest_mllp_port
        )
        try:
            for i in range(per_connection):
                started = time.perf_counter()
                writer.write(frame(oru(offset + i)))
                ack = await reader.readuntil(END_BLOCK)
                latencies.append(time.perf_counter() - started)
                if b"MSA|AA|" not in ack:
                    raise RuntimeError(f"expected AA, got {ack[:200]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    first = 1_000_000 * connections  # distinct message ids per run
    await asyncio.gather(*(one(first + c * per_connection) for c in range(connections)))
    return per_connection * connections / (time.perf_counter() - started), latencies


async def measure(settings: Settings, servers: str) -> dict[str, float]:
    results = await raw_producer(settings, servers)
    await mllp(settings, 1)  # warm-up: connections, metadata, JIT-free but caches warm
    single, _ = await mllp(settings, 1)
    concurrent, latencies = await mllp(settings, CONNECTIONS)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        **results,
        "ingest_mllp_msgs_per_s": concurrent,
        "ingest_mllp_single_connection_msgs_per_s": single,
        "ingest_mllp_ack_p50_ms": quantiles[49] * 1000,
        "ingest_mllp_ack_p99_ms": quantiles[98] * 1000,
    }


def main() -> None:
    settings = Settings(
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        ingest_port=free_loopback_port(),
        ingest_mllp_port=free_loopback_port(),
        ingest_api_tokens=["bench"],
    )
    with provide_broker(settings.kafka_bootstrap_servers, requested=settings.broker) as broker:
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        asyncio.run(ensure_topics(settings, broker.bootstrap_servers, create=True))
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "PLATELETWATCH_TOPIC_PREFIX": settings.topic_prefix,
            "PLATELETWATCH_INGEST_PORT": str(settings.ingest_port),
            "PLATELETWATCH_INGEST_MLLP_PORT": str(settings.ingest_mllp_port),
            "PLATELETWATCH_INGEST_API_TOKENS": '["bench"]',
            "PLATELETWATCH_LOG_LEVEL": "WARNING",
        }
        ingest = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "ingest"], env=env, cwd=REPO
        )
        try:
            wait_until_ready(
                "ingest",
                f"http://{settings.bind_host}:{settings.ingest_port}/readyz",
                ingest,
                time.monotonic() + 60,
            )
            results = asyncio.run(measure(settings, broker.bootstrap_servers))
        finally:
            stop_processes([ingest], grace_seconds=10)
    record(
        {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "broker": broker.kind.value,
            "ingest_messages": MESSAGES,
            "ingest_connections": CONNECTIONS,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            **{name: round(value, 1) for name, value in results.items()},
        }
    )


if __name__ == "__main__":
    main()
