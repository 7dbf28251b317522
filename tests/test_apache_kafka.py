"""Apache Kafka from its jars (`make tools`), without Docker: it starts, is idempotent where Tansu
is not, serves `plateletwatch topics`, replicates across three nodes, and leaves nothing behind.

Skipped, saying why, where java or the jars are missing; every other broker test runs on it too
(tests/conftest.py)."""

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas import DeadLetter, Topic
from services.config import Settings
from services.kafka import producer as producer_module
from services.kafka.admin import ensure_topics, required_topics
from services.kafka.apache_kafka import (
    KAFKA_JARS_ENV,
    KafkaUnavailableError,
    LocalApacheKafka,
    Node,
    server_properties,
    unavailable_reason,
)
from services.kafka.broker import Broker, BrokerKind, provide_broker
from services.kafka.producer import EventPublisher
from tests.conftest import run_cli, settings_env, started_kafka

ON_KAFKA = pytest.mark.parametrize("broker", ["kafka"], indirect=True)
needs_kafka = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"Apache Kafka unavailable: {unavailable_reason()}"
)


def test_missing_jars_are_a_clear_error_naming_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KAFKA_JARS_ENV, str(tmp_path))
    with (
        pytest.raises(KafkaUnavailableError, match=r"no Kafka jars in .*run `make tools`"),
        provide_broker(None, lambda: False, requested="kafka"),
    ):
        pass


def test_three_nodes_replicate_three_ways_and_keep_two_in_sync(tmp_path: Path) -> None:
    nodes = [Node(i, 9000 + i, 9100 + i) for i in (1, 2, 3)]
    properties = dict(
        line.split("=", 1) for line in server_properties(nodes[1], nodes, tmp_path).splitlines()
    )
    assert properties["node.id"] == "2"
    assert properties["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    )
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"
    assert properties["default.replication.factor"] == "3"
    assert properties["offsets.topic.replication.factor"] == "3"
    assert properties["min.insync.replicas"] == "2"
    one = dict(
        line.split("=", 1) for line in server_properties(nodes[0], nodes[:1], tmp_path).splitlines()
    )
    assert (one["offsets.topic.replication.factor"], one["min.insync.replicas"]) == ("1", "1")


@needs_kafka
@pytest.mark.integration
def test_local_kafka_starts_answers_and_leaves_nothing_behind() -> None:
    started = time.monotonic()
    with provide_broker(None, lambda: False, requested="kafka") as broker:
        startup = time.monotonic() - started
        assert broker.kind is BrokerKind.LOCAL_KAFKA
        assert broker.is_running()
        pids = _kafka_pids(f"PLAINTEXT://{broker.bootstrap_servers}")
        assert len(pids) == 1
        (config,) = pids.values()
        assert config.is_file()
    print(f"Apache Kafka (1 node) answered after {startup:.1f} s")
    assert not broker.is_running()
    assert not _kafka_pids(f"PLAINTEXT://{broker.bootstrap_servers}")
    assert not config.parent.exists()  # its data is gone with it


def _kafka_pids(listener: str) -> dict[int, Path]:
    """The Kafka processes (read from /proc) whose server.properties has this listener, with
    that file."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            *_, main, config = (proc / "cmdline").read_bytes().decode().split("\0")[:-1]
            if main == "kafka.Kafka" and listener in Path(config).read_text():
                found[int(proc.name)] = Path(config)
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.integration
@ON_KAFKA
async def test_producers_are_idempotent_on_kafka(
    broker: Broker, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert broker.kind in (BrokerKind.LOCAL_KAFKA, BrokerKind.TESTCONTAINERS)
    caplog.set_level(logging.WARNING, logger="services.kafka.producer")
    producer = await producer_module.start_durable_producer(broker.bootstrap_servers, "t", 10)
    try:
        assert producer._txn_manager is not None  # aiokafka holds a producer id: idempotent
        assert producer._txn_manager.producer_id >= 0
    finally:
        await producer.stop()
    assert not [r for r in caplog.records if "idempotent" in r.getMessage()]

    async with started_kafka(settings) as kafka:
        letter = DeadLetter(
            event_id="e1",
            source="json",
            reason_code="invalid_json",
            reason="test",
            raw_payload="{",
            received_at=datetime(2026, 11, 25, 8, tzinfo=UTC),
        )
        await kafka.publisher.publish(settings.topic(Topic.INGEST_DEADLETTER), "k", letter)
        assert await kafka.dead_letters() == [letter]


@pytest.mark.integration
@ON_KAFKA
def test_the_topics_command_creates_then_verifies_on_kafka(settings: Settings) -> None:
    env = settings_env(settings)
    created = run_cli("topics", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created ") == len(required_topics(settings))
    assert f"all topics present with {settings.partitions} partitions" in created.stdout
    again = run_cli("topics", env=env)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout.lower()


@needs_kafka
@pytest.mark.integration
async def test_three_node_cluster_creates_topics_with_three_replicas() -> None:
    cluster = LocalApacheKafka(nodes=3)
    started = time.monotonic()
    cluster.start(timeout=120)
    print(f"Apache Kafka (3 nodes) answered after {time.monotonic() - started:.1f} s")
    try:
        settings = Settings(
            kafka_bootstrap_servers=cluster.bootstrap_servers,
            topic_prefix="rf3.",
            partitions=2,
            replication_factor=3,
        )
        await ensure_topics(settings, cluster.bootstrap_servers, create=True)
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
        await admin.start()
        try:  # the broker asked may learn of the topic a moment after the controller made it
            for _ in range(50):
                (described,) = await admin.describe_topics([settings.topic(Topic.LAB_RESULTS)])
                if described["error_code"] == 0:
                    break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        assert described["error_code"] == 0
        assert [len(p["replicas"]) for p in described["partitions"]] == [3, 3]
        publisher = EventPublisher(cluster.bootstrap_servers, "test", timeout_seconds=20)
        await publisher.start()
        try:
            assert publisher._producer is not None
            assert publisher._producer._txn_manager is not None
        finally:
            await publisher.stop()
    finally:
        cluster.stop()
    assert not cluster.is_running()
