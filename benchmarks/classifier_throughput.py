"""Classifier throughput through the broker, beside a plain aiokafka consumer that decodes the same
events with the same pydantic models, both reading the same topics in the same run.

The events (results and treatments for BENCH_CLASSIFIER_PATIENTS patients, BENCH_CLASSIFIER_EVENTS
in all, in arrival order across patients) are published once; then (a) a plain consumer reads
and decodes them all, and (b) the real `plateletwatch classifier` process, started afterwards,
classifies them all: its rate is counted from the moment it is ready to the moment its events
counter (read from /metrics) reaches the total, less what it had done before it was ready. The
worker's CPU time over the same span (from /proc) gives its CPU per event, which holds still when
other processes share the machine and the rates do not.

Run with `make bench` (figures merged into bench-results.json); PLATELETWATCH_BROKER=kafka runs it
on Apache Kafka from its jars.
"""

import asyncio
import os
import platform
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.results import record
from schemas import LabResult, Topic, clinical_context_adapter
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import free_loopback_port, provide_broker
from services.processes import stop_processes, wait_until_ready
from tests.test_classifier_service import patient, story
from tests.test_engine import result

REPO = Path(__file__).resolve().parents[1]
PATIENTS = int(os.environ.get("BENCH_CLASSIFIER_PATIENTS", "10000"))
EVENTS = int(os.environ.get("BENCH_CLASSIFIER_EVENTS", "100000"))
TARGET_SHARE = ">= 0.1"
EVENTS_COUNTER = "plateletwatch_classifier_events_total"


def generate(patients: int, events: int) -> list[Any]:
    """Each patient's story (a critical page, therapy, refractory, a response) followed by
    normal counts, interleaved across patients in arrival order, `events` in all."""
    per_patient = -(-events // patients)
    stories = []
    for n in range(patients):
        who = patient(n)
        own = story(n)
        day = 30.0
        while len(own) < per_patient:
            rid = f"{who.identifier.mrn}-n{len(own)}"
            own.append(result(180 + len(own), day, result_id=rid, patient=who))
            day += 1.5
        stories.append(own)
    return [s[i] for i in range(per_patient) for s in stories if i < len(s)][:events]


async def publish(settings: Settings, events: list[Any]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=20
    )
    await producer.start()
    try:
        sends = []
        for event in events:
            topic = Topic.LAB_RESULTS if isinstance(event, LabResult) else Topic.CLINICAL_CONTEXT
            sends.append(
                await producer.send(
                    settings.topic(topic),
                    value=event.model_dump_json().encode(),
                    key=event.patient.identifier.key.encode(),
                )
            )
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def raw_consume_decode(settings: Settings, total: int) -> float:
    """Events per second for a plain consumer reading every input partition and decoding each
    event as the classifier does."""
    lab_results = settings.topic(Topic.LAB_RESULTS)
    inputs = (lab_results, settings.topic(Topic.CLINICAL_CONTEXT))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t in inputs for p in range(settings.partitions)])
        await consumer.seek_to_beginning()
        started = time.perf_counter()
        seen = 0
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, messages in batches.items():
                for message in messages:
                    if tp.topic == lab_results:
                        LabResult.model_validate_json(message.value)
                    else:
                        clinical_context_adapter.validate_json(message.value)
                seen += len(messages)
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def events_counted(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(EVENTS_COUNTER + "{")
        )
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def classifier_rate(settings: Settings, total: int) -> tuple[float, float, float]:
    """Events per second for the real classifier process, the seconds it took, and its CPU
    microseconds per event."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "PLATELETWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "PLATELETWATCH_PARTITIONS": str(settings.partitions),
        "PLATELETWATCH_CLASSIFIER_PORT": str(settings.classifier_port),
        "PLATELETWATCH_LOG_LEVEL": "WARNING",
    }
    base = f"http://{settings.bind_host}:{settings.classifier_port}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "classifier"], env=env, cwd=REPO
    )
    try:
        wait_until_ready("classifier", f"{base}/readyz", worker, time.monotonic() + 120)
        started = time.perf_counter()
        cpu_started = cpu_seconds(worker.pid)
        before = events_counted(f"{base}/metrics")
        done = before
        while done < total:
            if worker.poll() is not None:
                raise RuntimeError(f"the classifier exited ({worker.returncode}) at {done} events")
            time.sleep(0.2)
            done = events_counted(f"{base}/metrics")
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(worker.pid) - cpu_started
        return (total - before) / seconds, seconds, cpu * 1e6 / (total - before)
    finally:
        stop_processes([worker], grace_seconds=20)


def main() -> None:
    settings = Settings(
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        classifier_port=free_loopback_port(),
    )
    events = generate(PATIENTS, EVENTS)
    with provide_broker(settings.kafka_bootstrap_servers, requested=settings.broker) as broker:
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        asyncio.run(ensure_topics(settings, broker.bootstrap_servers, create=True))
        asyncio.run(publish(settings, events))
        raw = asyncio.run(raw_consume_decode(settings, len(events)))
        classified, seconds, cpu_per_event = classifier_rate(settings, len(events))
    record(
        {
            "classifier_bench_measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "classifier_bench_broker": broker.kind.value,
            "classifier_bench_events": len(events),
            "classifier_bench_patients": PATIENTS,
            "classifier_bench_worker": "plateletwatch classifier process, 1 worker",
            "classifier_bench_machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "raw_consume_decode_events_per_s": round(raw),
            "classifier_broker_events_per_s": round(classified),
            "classifier_broker_seconds": round(seconds, 1),
            "classifier_broker_cpu_us_per_event": round(cpu_per_event),
            "classifier_broker_share_of_raw": round(classified / raw, 3),
        },
        {"classifier_broker_share_of_raw": TARGET_SHARE},
    )


if __name__ == "__main__":
    main()
