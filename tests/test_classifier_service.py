"""The classifier worker against the real broker: results and treatments in, alerts out, and a
SIGKILL mid-stream that neither loses nor duplicates an alert (compared with the offline replay)."""

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import (
    DeadLetter,
    LabResult,
    Patient,
    PatientIdentifier,
    PlateletAlert,
    ResultStatus,
    Topic,
    TreatmentCategory,
)
from services.classifier.worker import Batch
from services.config import Settings
from services.kafka.broker import free_loopback_port
from services.kafka.lag import group_lag
from services.kafka.producer import EventPublisher
from tests.conftest import consume_until, read_all, run_cli, settings_env
from tests.test_engine import result, splenectomy, treatment

pytestmark = pytest.mark.integration


def patient(number: int) -> Patient:
    return Patient(
        identifier=PatientIdentifier(authority="HOSP", mrn=f"P{number:03d}"),
        birth_date=date(2012 if number % 3 == 0 else 1970, 5, 1),
    )


def story(number: int) -> list[Any]:
    """A patient's events in arrival order: a critical page, first-line therapy, no response
    (refractory), a response; every other patient also has a result corrected away."""
    who = patient(number)

    def r(
        value: float | None, days: float, rid: str, status: ResultStatus = ResultStatus.FINAL
    ) -> LabResult:
        return result(value, days, status, result_id=f"{who.identifier.mrn}-{rid}", patient=who)

    events: list[Any] = [
        r(10, -1, "base"),
        treatment(TreatmentCategory.IVIG, 0, "Privigen").model_copy(
            update={"patient": who, "event_id": f"ivig-{number}"}
        ),
        r(25, 7, "d7"),
        r(24, 8, "d8"),
        r(150, 9, "d9"),
    ]
    if number % 2:
        events.append(r(60, -1, "base", ResultStatus.CORRECTED))
    if number % 4 == 0:
        events.append(
            splenectomy(20).model_copy(update={"patient": who, "event_id": f"spl-{number}"})
        )
        events += [r(22, 21, "d21"), r(21, 22.5, "d22")]
    return events


def interleaved(patients: int) -> list[Any]:
    stories = [story(n) for n in range(patients)]
    return [s[i] for i in range(max(map(len, stories))) for s in stories if i < len(s)]


async def publish(settings: Settings, events: list[Any], pause: float = 0.0) -> None:
    publisher = EventPublisher(settings.kafka_bootstrap_servers or "", "test", 10)
    await publisher.start()
    try:
        for event in events:
            topic = Topic.LAB_RESULTS if isinstance(event, LabResult) else Topic.CLINICAL_CONTEXT
            await publisher.publish(settings.topic(topic), event.patient.identifier.key, event)
            await asyncio.sleep(pause)
    finally:
        await publisher.stop()


def alert_set(records: list[Any]) -> set[tuple[str, str]]:
    alerts = [PlateletAlert.model_validate_json(r.value) for r in records]
    return {(a.alert_id, a.kind.value) for a in alerts}


async def alerts_until(
    settings: Settings, expected: set[tuple[str, str]], within_seconds: float
) -> list[Any]:
    """Read platelet.alerts.v1 until every expected alert has been seen; return what was read."""
    seen: list[Any] = []
    missing = set(expected)

    def complete(record: Any) -> bool:
        seen.append(record)
        missing.difference_update(alert_set([record]))  # each record decoded once
        return not missing

    topic = settings.topic(Topic.PLATELET_ALERTS)
    await consume_until(settings.kafka_bootstrap_servers or "", topic, complete, within_seconds)
    return seen


async def replayed(events: list[Any], tmp_path: Path, settings: Settings) -> set[tuple[str, str]]:
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("".join(e.model_dump_json() + "\n" for e in events))
    replay = await asyncio.to_thread(run_cli, "replay", str(ndjson), env=settings_env(settings))
    assert replay.returncode == 0, replay.stderr
    alerts = [PlateletAlert.model_validate_json(line) for line in replay.stdout.splitlines()]
    return {(a.alert_id, a.kind.value) for a in alerts}


class HeldWrites:
    """Writes whose acknowledgements the test hands out: each `send` returns one future,
    resolved (or failed) by the test, for the records it sent."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, bytes | None, bytes]] = []
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.acks: list[asyncio.Future[Any]] = []

    def add(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        self.kept.append((topic, key, value))

    async def send(self) -> list[asyncio.Future[Any]]:
        if not self.kept:
            return []
        self.sent.extend(self.kept)
        self.kept.clear()
        self.acks.append(asyncio.get_running_loop().create_future())
        return [self.acks[-1]]


async def test_a_batch_writes_no_patient_record_before_its_alerts_are_acknowledged() -> None:
    """A record durable before the alert it caused marks the event applied: killed then, the
    worker (or the next owner of the partition) would see a duplicate on restart and never send
    the alert. Found when the failover run lost a patient whose alert partition was changing
    leader while the changelog's was not."""
    writes = HeldWrites()
    batch = Batch(writes, records={(b"patient-1", 0): b"history"})
    writes.add("alerts", b"patient-1", b"alert")
    durable = asyncio.create_task(batch.make_durable("changelog"))
    await asyncio.sleep(0.05)
    assert writes.sent == [("alerts", b"patient-1", b"alert")]
    writes.acks[0].set_result(None)
    await asyncio.sleep(0.05)
    assert writes.sent[1:] == [("changelog", b"patient-1", b"history")]
    assert not durable.done()
    writes.acks[1].set_result(None)
    await asyncio.wait_for(durable, timeout=5)

    refused = HeldWrites()
    failed = Batch(refused, records={(b"patient-2", 1): b"history"})
    refused.add("alerts", b"patient-2", b"alert")
    failing = asyncio.create_task(failed.make_durable("changelog"))
    await asyncio.sleep(0.05)
    refused.acks[0].set_exception(KafkaError("alerts partition without a leader"))
    with pytest.raises(KafkaError):
        await failing
    assert refused.sent == [("alerts", b"patient-2", b"alert")]


async def test_results_and_treatments_through_the_broker(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    classifier = start_service("classifier", topics)
    classifier.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz")
    events = story(1)
    await publish(topics, events)
    expected = await replayed(events, tmp_path, topics)
    assert {kind for _, kind in expected} == {"critical_low", "refractory", "withdrawn"}
    seen = await alerts_until(topics, expected, 60)
    assert alert_set(seen) == expected
    refractory = [
        a
        for a in (PlateletAlert.model_validate_json(r.value) for r in seen)
        if a.kind.value == "refractory"
    ]
    assert refractory[0].evidence.note == "first-line: Privigen"
    assert refractory[0].evidence.baseline_10e9_per_l == 10


async def test_a_backlog_classified_in_batches_pages_each_patient_as_replay_does(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    """The worker applies events in batches and writes each patient's record once per batch: a
    backlog published before it starts puts many events of one patient into one batch. Per
    patient, the alerts (ids and kinds) are exactly the offline replay's, none twice."""
    events = interleaved(120)
    await publish(topics, events)
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("".join(e.model_dump_json() + "\n" for e in events))
    replay = await asyncio.to_thread(run_cli, "replay", str(ndjson), env=settings_env(topics))
    assert replay.returncode == 0, replay.stderr
    replayed_alerts = [PlateletAlert.model_validate_json(x) for x in replay.stdout.splitlines()]
    expected = {(a.alert_id, a.kind.value) for a in replayed_alerts}
    assert {"critical_low", "refractory", "withdrawn"} <= {kind for _, kind in expected}
    worker = start_service("classifier", topics)
    worker.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz")
    await alerts_until(topics, expected, 90)
    await asyncio.sleep(2)  # anything wrongly added arrives by now
    records = await read_all(
        topics.kafka_bootstrap_servers or "", topics.topic(Topic.PLATELET_ALERTS)
    )
    alerts = [PlateletAlert.model_validate_json(r.value) for r in records]
    assert len({a.alert_id for a in alerts}) == len(alerts), "an alert was sent twice"
    by_patient = {(a.patient.identifier.key, a.alert_id, a.kind.value) for a in alerts}
    assert by_patient == {
        (a.patient.identifier.key, a.alert_id, a.kind.value) for a in replayed_alerts
    }
    metrics = f"http://{topics.bind_host}:{topics.classifier_port}/metrics"
    assert await lag_reported(
        metrics, lambda lag: len(lag) == 2 * topics.partitions and not any(lag)
    )


async def test_sigterm_in_the_middle_of_a_batch_loses_none_of_its_events(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    """A stop (SIGTERM, as a rolling deploy sends) while a batch is under way: the batch must be
    finished and committed, or not committed at all. Stopped mid-backlog (10,000 events: several
    batches of 2,000 even where one fetch brings them all) and started again, the worker pages
    everything replay pages."""
    events = interleaved(1600)
    expected = await replayed(events, tmp_path, topics)
    await publish(topics, events)
    metrics = f"http://{topics.bind_host}:{topics.classifier_port}/metrics"
    worker = start_service("classifier", topics)
    worker.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz")
    async with httpx.AsyncClient() as client:
        for _ in range(1500):  # 30 s at most
            if done := await events_done(client, metrics):
                break
            await asyncio.sleep(0.02)
    assert 0 < done < len(events), f"{done} of {len(events)} done at the stop: not mid-backlog"
    worker.process.terminate()
    worker.process.wait()
    worker = start_service("classifier", topics)
    worker.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz", 45)
    seen = await alerts_until(topics, expected, 90)
    assert alert_set(seen) >= expected


async def test_a_worker_joining_while_events_flow_loses_and_repeats_no_alert(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    """A second worker joining (a scale-up, a rolling deploy) rebalances the group while the
    first is classifying: the first finishes and commits the batch under way before it gives
    partitions up, and the second reads their histories back before applying their events.
    Every alert replay sends is sent, and none twice."""
    events = interleaved(1600)
    expected = await replayed(events, tmp_path, topics)
    backlog, flowing = events[:5000], events[5000:]
    await publish(topics, backlog)
    first = start_service("classifier", topics)
    first.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz")
    sending = asyncio.create_task(publish(topics, flowing))
    joining = topics.model_copy(update={"classifier_port": free_loopback_port()})
    second = start_service("classifier", joining)
    second.wait_ready(f"http://{joining.bind_host}:{joining.classifier_port}/readyz", 60)
    await sending
    await alerts_until(topics, expected, 90)
    await asyncio.sleep(2)  # anything a rebalance would wrongly add arrives by now
    records = await read_all(
        topics.kafka_bootstrap_servers or "", topics.topic(Topic.PLATELET_ALERTS)
    )
    assert alert_set(records) == expected  # none missing, none false (a re-send is deduped)
    assert first.process.poll() is None
    assert second.process.poll() is None


async def events_done(client: httpx.AsyncClient, metrics_url: str) -> float:
    """Events the classifier has consumed so far, by its own counter."""
    text = (await client.get(metrics_url)).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("plateletwatch_classifier_events_total{")
    )


async def lag_reported(metrics_url: str, wanted: Callable[[list[float]], bool]) -> bool:
    """Whether the classifier's consumer-lag gauges come to satisfy `wanted` within 30 s (the
    worker asks the broker every few seconds)."""
    deadline = asyncio.get_running_loop().time() + 30
    async with httpx.AsyncClient() as client:
        while asyncio.get_running_loop().time() < deadline:
            text = (await client.get(metrics_url)).text
            lag = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("plateletwatch_classifier_consumer_lag{")
            ]
            if wanted(lag):
                return True
            await asyncio.sleep(1)
    return False


async def test_consumer_lag_is_the_log_end_minus_what_the_group_committed(
    topics: Settings,
) -> None:
    """Measured: the lag gauge read the high-water mark of the worker's last fetch, so a stalled
    consumer reported the lag it had when it stopped. Asked of the broker, a group that has
    committed nothing lags by every record, a commit takes off what it covers, and records
    nobody reads add to it."""
    servers = topics.kafka_bootstrap_servers or ""
    topic = topics.topic(Topic.LAB_RESULTS)
    results = [e for e in story(1) if isinstance(e, LabResult)]  # one patient: one partition
    await publish(topics, results)  # one at a time: one record per batch
    partitions = [(topic, p) for p in range(topics.partitions)]
    group = topics.group_id("lag-reader")
    lag = await group_lag(servers, group, partitions)
    assert sum(lag.values()) == len(results)
    (busy,) = [tp for tp, behind in lag.items() if behind]
    committer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group)
    await committer.start()
    try:
        committer.assign([TopicPartition(*busy)])
        await committer.commit({TopicPartition(*busy): 1})
    finally:
        await committer.stop()
    assert await group_lag(servers, group, partitions) == {
        tp: len(results) - 1 if tp == busy else 0 for tp in partitions
    }
    await publish(topics, results[:2])
    assert sum((await group_lag(servers, group, partitions)).values()) == len(results) + 1


async def test_sigkill_mid_stream_loses_and_duplicates_no_alert(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    """Kill -9 the worker while events flow, restart it, and compare the alerts (deduplicated
    by alert_id, the notifier's key) with the offline replay of the same events."""
    events = interleaved(16)
    expected = await replayed(events, tmp_path, topics)
    assert {"critical_low", "refractory", "withdrawn"} <= {kind for _, kind in expected}

    first = start_service("classifier", topics)
    first.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz")
    sending = asyncio.create_task(publish(topics, events, pause=0.01))
    await asyncio.sleep(len(events) * 0.01 / 2)
    assert not sending.done(), "the worker must die while events are still flowing"
    first.process.kill()  # SIGKILL: no offsets committed on the way out, no flush
    first.process.wait()
    await sending
    second = start_service("classifier", topics)
    second.wait_ready(f"http://{topics.bind_host}:{topics.classifier_port}/readyz")

    await alerts_until(topics, expected, 90)
    await asyncio.sleep(2)  # anything a restart would wrongly add arrives by now
    everything = await read_all(
        topics.kafka_bootstrap_servers or "", topics.topic(Topic.PLATELET_ALERTS)
    )
    assert alert_set(everything) == expected


async def test_every_restart_recovers_its_state_and_loses_no_alert(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    """Measured: from the 3rd-4th restart every start crashed (faust's table recovery: persisted
    offset above the high-water mark) and the patients sent meanwhile were never paged. Six
    restarts, SIGKILL and SIGTERM in turn, each patient's story spread over all of them (the
    refractory alerts and withdrawals need what came before the restart): every start is ready
    and the alerts are exactly the offline replay's."""
    ready = f"http://{topics.bind_host}:{topics.classifier_port}/readyz"
    events = interleaved(12)
    expected = await replayed(events, tmp_path, topics)
    assert {"critical_low", "refractory", "withdrawn"} <= {kind for _, kind in expected}
    chunk = len(events) // 6 + 1
    worker = start_service("classifier", topics)
    worker.wait_ready(ready)
    for start in range(0, len(events), chunk):
        await publish(topics, events[start : start + chunk], pause=0.005)
        await asyncio.sleep(1.0)
        if (start // chunk) % 2:
            worker.process.terminate()
        else:
            worker.process.kill()
        worker.process.wait()
        worker = start_service("classifier", topics)
        worker.wait_ready(ready, within_seconds=45)
    await alerts_until(topics, expected, 90)
    await asyncio.sleep(2)
    seen = await read_all(topics.kafka_bootstrap_servers or "", topics.topic(Topic.PLATELET_ALERTS))
    assert alert_set(seen) == expected


async def test_a_poisonous_patient_is_dead_lettered_and_everyone_else_is_paged(
    topics: Settings, start_service, tmp_path: Path
) -> None:
    """Measured: a patient whose history passed 1 MB, or a result collected in year 9999, made
    the classifier crash-loop and nobody was paged any more. The history that outgrows its
    record forgets its older half and that patient is still paged; what cannot be applied is
    set aside on classifier.deadletter.v1 with the reason; a critical value of another patient
    sent after them still pages."""
    settings = topics.model_copy(update={"classifier_state_limit_bytes": 20_000})
    worker = start_service("classifier", settings)
    worker.wait_ready(f"http://{settings.bind_host}:{settings.classifier_port}/readyz")
    big, far, well = patient(900), patient(901), patient(902)
    long_id = "X" * 190
    flood = [
        result(150, day, result_id=f"{long_id}-{day}", patient=big) for day in range(60)
    ]  # each value holds its long id: the history passes 20 kB within the flood
    flood.append(result(9, 60.5, result_id="big-critical", patient=big))
    year_9999 = result(9, 0, result_id="far-1", patient=far).model_copy(
        update={"collected_at": datetime(9999, 6, 1, tzinfo=UTC)}
    )
    await publish(settings, [*flood, year_9999])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(Topic.LAB_RESULTS), b"not json at all", key=b"HOSP|P903"
        )
        await producer.send_and_wait(settings.topic(Topic.LAB_RESULTS), None, key=b"HOSP|P904")
    finally:
        await producer.stop()
    critical = result(9, 0, result_id="well-1", patient=well)
    await publish(settings, [critical])

    paged: set[str] = set()

    def both_paged(record: Any) -> bool:
        # Partitions are read concurrently: well's page may come before the end of big's flood.
        paged.add(PlateletAlert.model_validate_json(record.value).patient.identifier.mrn)
        return {big.identifier.mrn, well.identifier.mrn} <= paged

    await consume_until(
        settings.kafka_bootstrap_servers or "",
        settings.topic(Topic.PLATELET_ALERTS),
        both_paged,
        60,
    )
    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in await read_all(
            settings.kafka_bootstrap_servers or "", settings.topic(Topic.CLASSIFIER_DEADLETTER)
        )
    ]
    reasons = {letter.reason_code for letter in letters}
    assert "undecodable_event" in reasons  # the bytes that are not JSON
    assert any(letter.raw_payload == "" for letter in letters)  # the record with no value
    assert not any("big-critical" in letter.raw_payload for letter in letters)
    (far_letter,) = [letter for letter in letters if "far-1" in letter.raw_payload]
    assert far_letter.reason_code in {"engine_error", "undecodable_event"}  # as ingest refuses
    assert all(letter.source == "classifier" for letter in letters)
    assert worker.process.poll() is None, "the worker must go on"
