"""Broker selection, the embedded Tansu lifecycle, and the explicit idempotence fallback."""

import logging
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from schemas import DeadLetter
from services.kafka import producer as producer_module
from services.kafka.broker import (
    BrokerKind,
    BrokerStartError,
    EmbeddedTansu,
    choose_broker,
    docker_answers,
    free_loopback_port,
    provide_broker,
    wait_for_port,
)
from services.kafka.producer import EventPublisher


def _docker_must_not_be_asked() -> bool:
    raise AssertionError("Docker was probed although a broker was configured")


def test_configured_bootstrap_servers_win_without_asking_docker() -> None:
    assert choose_broker("kafka:9092", _docker_must_not_be_asked) is BrokerKind.EXTERNAL


def test_testcontainers_when_docker_answers_else_tansu() -> None:
    assert choose_broker(None, lambda: True) is BrokerKind.TESTCONTAINERS
    assert choose_broker("", lambda: False) is BrokerKind.EMBEDDED_TANSU


def test_broker_kafka_comes_after_docker_and_tansu_can_be_asked_for() -> None:
    assert choose_broker(None, lambda: True, "kafka") is BrokerKind.TESTCONTAINERS
    assert choose_broker(None, lambda: False, "kafka") is BrokerKind.LOCAL_KAFKA
    assert choose_broker(None, _docker_must_not_be_asked, "tansu") is BrokerKind.EMBEDDED_TANSU
    assert choose_broker("k:9092", _docker_must_not_be_asked, "kafka") is BrokerKind.EXTERNAL
    with pytest.raises(ValueError, match="PLATELETWATCH_BROKER='zookeeper'"):
        choose_broker(None, lambda: False, "zookeeper")


def test_an_unreachable_docker_engine_means_no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert docker_answers() is False


def test_provide_broker_passes_a_configured_broker_through() -> None:
    with provide_broker("10.0.0.1:9092", _docker_must_not_be_asked) as broker:
        assert (broker.kind, broker.bootstrap_servers) == (BrokerKind.EXTERNAL, "10.0.0.1:9092")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.integration
async def test_embedded_tansu_serves_kafka_and_leaves_no_process_behind() -> None:
    with provide_broker(None, lambda: False) as broker:
        assert broker.kind is BrokerKind.EMBEDDED_TANSU
        publisher = EventPublisher(broker.bootstrap_servers, "test", timeout_seconds=10)
        await publisher.start()
        letter = DeadLetter.model_validate(
            {
                "event_id": "e1",
                "source": "json",
                "reason_code": "invalid_json",
                "reason": "test",
                "raw_payload": "{",
                "received_at": "2026-11-25T08:00:00Z",
            }
        )
        await publisher.publish("probe", "k", letter)
        await publisher.stop()
        consumer = AIOKafkaConsumer(
            "probe", bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        message = await consumer.getone()
        await consumer.stop()
        assert DeadLetter.model_validate_json(message.value) == letter
        pids = _broker_pids(broker.bootstrap_servers)
        assert len(pids) == 1
    assert not _process_exists(pids[0])


def _broker_pids(bootstrap_servers: str) -> list[int]:
    """Processes whose command line listens on this address (read from /proc)."""
    needle = f"tcp://{bootstrap_servers}".encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes() and b"broker" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.integration
def test_tansu_stop_is_idempotent_and_reaps_the_process() -> None:
    tansu = EmbeddedTansu()
    tansu.start()
    pid = tansu.pid
    assert pid is not None
    assert _process_exists(pid)
    tansu.stop()
    tansu.stop()
    assert not _process_exists(pid)
    with pytest.raises(BrokerStartError, match=r"exited before listening"):
        wait_for_port("127.0.0.1", tansu.port, 0.5, tansu.is_running)


@pytest.mark.integration
@pytest.mark.one_broker(reason="the fallback is Tansu's; Apache Kafka never takes it")
async def test_idempotence_fallback_is_explicit_and_logged_once(
    broker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if broker.kind is not BrokerKind.EMBEDDED_TANSU:
        pytest.skip("only the embedded Tansu broker lacks idempotent producers")
    monkeypatch.setattr(producer_module, "_fallback_logged", False)
    caplog.set_level(logging.WARNING, logger="services.kafka.producer")
    producers = [
        producer_module.start_durable_producer(broker.bootstrap_servers, "t", 10) for _ in "ab"
    ]
    started = [await p for p in producers]
    for p in started:
        assert p._txn_manager is None  # aiokafka keeps no producer id: not idempotent
        await p.stop()
    fallbacks = [r for r in caplog.records if "idempotent" in r.getMessage()]
    assert len(fallbacks) == 1
