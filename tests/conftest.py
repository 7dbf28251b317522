"""Shared fixtures: one real broker per test session, and per-test isolation by topic namespace.

The broker is chosen as `plateletwatch run` chooses it (KAFKA_BOOTSTRAP_SERVERS, else
testcontainers Kafka when Docker answers, else Apache Kafka from its jars with `--broker kafka` or
PLATELETWATCH_BROKER=kafka, else embedded Tansu). Every test that uses the `broker` fixture runs on
that broker and again on Apache Kafka from its jars (skipped where java or the jars are missing),
unless it is marked `one_broker` saying why. Each test gets its own topic prefix, hence its own
topics and consumer groups.
"""

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from schemas import DeadLetter, Topic
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.apache_kafka import LocalApacheKafka, unavailable_reason
from services.kafka.broker import (
    Broker,
    BrokerKind,
    EmbeddedTansu,
    free_loopback_port,
    provide_broker,
    started,
)
from services.kafka.producer import EventPublisher
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.store.repository import NotifierStore
from services.processes import stop_processes, wait_until_ready
from tests.postgres_server import PostgresUnavailable, provide_postgres

REPO = Path(__file__).resolve().parents[1]
TEST_TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=("kafka", "tansu"),
        default=os.environ.get("PLATELETWATCH_BROKER"),
        help="the session broker where KAFKA_BOOTSTRAP_SERVERS is unset and Docker does not "
        "answer, as PLATELETWATCH_BROKER: Apache Kafka from `make tools`' jars, or embedded Tansu",
    )


def _session_broker_is_apache_kafka(config: pytest.Config) -> bool:
    return not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and config.getoption("--broker") == "kafka"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every broker test on the session broker and on Apache Kafka, unless that is one, the
    test is marked `one_broker`, or it names its broker itself (parametrize "broker")."""
    names_its_broker = any(
        "broker" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize")
    )
    if (
        "broker" in metafunc.fixturenames
        and not names_its_broker
        and not metafunc.definition.get_closest_marker("one_broker")
        and not _session_broker_is_apache_kafka(metafunc.config)
    ):
        metafunc.parametrize("broker", ["session", "kafka"], indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A `one_broker` marker must say why the test needs no second broker."""
    for item in items:
        marker = item.get_closest_marker("one_broker")
        if marker and not marker.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: one_broker needs reason=...")


@pytest.fixture(scope="session")
def session_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    with provide_broker(
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), requested=request.config.getoption("--broker")
    ) as running:
        yield running


@pytest.fixture(scope="session")
def apache_kafka(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """One Apache Kafka node from the jars for the session (the session broker when that is it);
    skipped, saying why, where java or the jars are missing."""
    if _session_broker_is_apache_kafka(request.config):
        yield request.getfixturevalue("session_broker")
        return
    if reason := unavailable_reason():
        pytest.skip(f"Apache Kafka unavailable: {reason}")
    with started(BrokerKind.LOCAL_KAFKA, LocalApacheKafka()) as kafka:
        yield kafka


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Broker:
    """The session broker, or Apache Kafka for a test parametrised (indirectly) with "kafka"."""
    name = "apache_kafka" if getattr(request, "param", "session") == "kafka" else "session_broker"
    return cast(Broker, request.getfixturevalue(name))


@pytest.fixture
def settings(broker: Broker, tmp_path: Path) -> Settings:
    """Settings for one test: its own topics, groups, ports and notifier database."""
    return Settings(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=3,
        ingest_port=free_loopback_port(),
        ingest_mllp_port=free_loopback_port(),
        ingest_api_tokens=[TEST_TOKEN],
        notifier_api_tokens=[TEST_TOKEN],
        classifier_port=free_loopback_port(),
        notifier_port=free_loopback_port(),
        classifier_session_timeout_seconds=4,
        notifier_database_url=f"sqlite+aiosqlite:///{tmp_path / 'notifier.sqlite3'}",
        notifier_retry_base_seconds=0.1,
    )


@pytest.fixture
async def topics(settings: Settings) -> Settings:
    await ensure_topics(settings, settings.kafka_bootstrap_servers or "", create=True)
    return settings


@pytest.fixture
def own_broker() -> Iterator[EmbeddedTansu]:
    """A broker of this test's own, so stopping it disturbs no other test."""
    tansu = EmbeddedTansu()
    tansu.start()
    yield tansu
    tansu.stop()


@dataclass(frozen=True)
class Kafka:
    """A started EventPublisher on a real broker where this test's topics exist, and what they
    hold."""

    settings: Settings
    publisher: EventPublisher

    async def records(self, topic: Topic) -> list[Any]:
        """Every record on one of this test's topics, as the broker holds it now."""
        servers = self.settings.kafka_bootstrap_servers or ""
        return await read_to_end(servers, self.settings.topic(topic))

    async def dead_letters(self) -> list[DeadLetter]:
        records = await self.records(Topic.INGEST_DEADLETTER)
        return [DeadLetter.model_validate_json(record.value) for record in records]


@contextlib.asynccontextmanager
async def started_kafka(settings: Settings) -> AsyncIterator[Kafka]:
    """Create the topics of `settings` on its broker and start a publisher there."""
    servers = settings.kafka_bootstrap_servers or ""
    await ensure_topics(settings, servers, create=True)
    publisher = EventPublisher(servers, "test", settings.kafka_produce_timeout_seconds)
    await publisher.start()
    try:
        yield Kafka(settings, publisher)
    finally:
        await publisher.stop()


@pytest.fixture
async def kafka(settings: Settings) -> AsyncIterator[Kafka]:
    """A publisher on the session broker."""
    async with started_kafka(settings) as started:
        yield started


@pytest.fixture
async def kafka_to_lose(settings: Settings, own_broker: EmbeddedTansu) -> AsyncIterator[Kafka]:
    """A publisher on the test's own broker: once `lose_broker()` a write fails within the 1 s
    produce timeout."""
    own = settings.model_copy(
        update={
            "kafka_bootstrap_servers": own_broker.bootstrap_servers,
            "kafka_produce_timeout_seconds": 1,
        }
    )
    async with started_kafka(own) as started:
        yield started


@pytest.fixture
def lose_broker(own_broker: EmbeddedTansu) -> Callable[[], None]:
    """Stops the test's own broker at once: killed after 0.1 s, since Tansu would wait 5 s for
    its clients to leave."""
    return lambda: own_broker.stop(timeout=0.1)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


class SmtpReceiver:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives and refuses
    recipients whose address starts with "nobody"."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = free_loopback_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody"):
            return "550 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = BytesParser(policy=email_policy.default).parsebytes(envelope.content)
        self.messages.append(cast(EmailMessage, parsed))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


TIERS = ("primary", "secondary", "attending")


def write_roster(path: Path, webhook: str | None = None) -> Path:
    """A roster where one doctor per tier is always on call for both services, the lab supervisor
    the fallback: everyone on e-mail, or, given a webhook receiver, on webhooks at /<who>."""
    how = (
        (lambda who: f"channel: webhook, address: '{webhook}/{who}'")
        if webhook
        else (lambda who: f"channel: email, address: {who}@hospital.example")
    )
    people = "\n".join(f"  {who}: {{name: Dr {who}, {how(who)}}}" for who in (*TIERS, "supervisor"))
    shifts = "\n".join(
        f"  - {{service: {service}, tier: {tier}, person: {tier},"
        " start: 2000-01-01T00:00:00Z, end: 2100-01-01T00:00:00Z}"
        for service in ("adult", "paediatric")
        for tier in TIERS
    )
    path.write_text(f"timezone: UTC\nfallback: supervisor\npeople:\n{people}\nshifts:\n{shifts}\n")
    return path


def write_escalation_policy(path: Path, window_seconds: float) -> Path:
    """Every kind climbs the tiers at once, `window_seconds` apart: minutes in a hospital."""
    chain = ", ".join(
        f"{{tier: {tier}, ack_within_minutes: {window_seconds / 60}}}" for tier in TIERS
    )
    kinds = "\n".join(
        f"  {kind}: {{chain: [{chain}]}}"
        for kind in ("critical_low", "persistent_severe", "refractory")
    )
    path.write_text(
        "timezone: UTC\nbusiness_hours: {days: [mon], start: '08:00', end: '18:00'}\n"
        f"kinds:\n{kinds}\n"
    )
    return path


def with_paging(
    settings: Settings, directory: Path, window_seconds: float, webhook: str | None = None
) -> Settings:
    """`settings` with the test roster, a chain `window_seconds` per tier, a quick escalation
    loop and a known link secret."""
    return settings.model_copy(
        update={
            "notifier_roster_file": write_roster(directory / "roster.yaml", webhook),
            "notifier_escalation_file": write_escalation_policy(
                directory / "escalation.yaml", window_seconds
            ),
            "notifier_escalation_interval_seconds": 0.5,
            "notifier_link_secret": SecretStr("end-to-end-secret"),
        }
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of the session's PostgreSQL: PLATELETWATCH_TEST_POSTGRES_URL's server (or,
    the older spelling, PLATELETWATCH_TEST_POSTGRES=user@host:port), else a throwaway one that
    tests/postgres_server.py starts; skipped, saying how to get one, where neither exists."""
    older = os.environ.get("PLATELETWATCH_TEST_POSTGRES")
    url = os.environ.get("PLATELETWATCH_TEST_POSTGRES_URL") or (
        f"postgresql://{older}/postgres" if older else None
    )
    try:
        with provide_postgres(url) as admin_url:
            yield admin_url
    except PostgresUnavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture(params=["sqlite", "postgresql"])
async def notifier_database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """The notifier's store as deployed: an SQLite file, and a fresh database on the session's
    PostgreSQL (`postgres_server`), dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'notifier.sqlite3'}"
        return
    server = make_url(request.getfixturevalue("postgres_server"))
    name = f"plateletwatch_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield server.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def store(notifier_database_url: str) -> AsyncIterator[NotifierStore]:
    """The notifier's store, started, on each database it is deployed with."""
    store = NotifierStore(notifier_database_url)
    await store.start()
    yield store
    await store.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PLATELETWATCH_") and key != "KAFKA_BOOTSTRAP_SERVERS"
    }
    for name, value in settings.model_dump(exclude_none=True).items():
        key = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if name == "kafka_bootstrap_servers"
            else f"PLATELETWATCH_{name.upper()}"
        )
        if isinstance(value, list):  # lists travel as JSON; secrets must travel revealed
            env[key] = json.dumps(
                [v.get_secret_value() if isinstance(v, SecretStr) else v for v in value]
            )
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        else:
            env[key] = str(value)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one `plateletwatch` command to completion, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ServiceProcess:
    """A PlateletWatch service run as a real process, as an operator would run it."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", command],
                env=env,
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, url: str, within_seconds: float = 60) -> None:
        try:
            wait_until_ready(self.command, url, self.process, time.monotonic() + within_seconds)
        except RuntimeError as error:
            raise AssertionError(f"{error}:\n{self.log()[-3000:]}") from error

    def stop(self) -> None:
        stop_processes([self.process], grace_seconds=20)


def service_logs(directory: Path) -> dict[str, str]:
    """The output of every service started in a test, by file name."""
    return {log.name: log.read_text(errors="replace") for log in directory.glob("*.log")}


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[[str, Settings], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(command: str, settings: Settings) -> ServiceProcess:
        service = ServiceProcess(command, settings_env(settings), tmp_path / f"{command}.log")
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        service.stop()


@contextlib.asynccontextmanager
async def _reader(bootstrap_servers: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _poll(consumer: AIOKafkaConsumer, timeout_ms: int) -> list[Any]:
    batches = await consumer.getmany(timeout_ms=timeout_ms)
    return [message for messages in batches.values() for message in messages]


async def consume_until(
    bootstrap_servers: str,
    topic: str,
    predicate: Callable[[Any], bool],
    within_seconds: float = 30,
) -> list[Any]:
    """Read a topic from the start until a message satisfies `predicate`; return all read."""
    seen: list[Any] = []
    async with _reader(bootstrap_servers, topic) as consumer:
        deadline = asyncio.get_running_loop().time() + within_seconds
        while asyncio.get_running_loop().time() < deadline:
            messages = await _poll(consumer, 500)
            seen.extend(messages)
            if any(predicate(message) for message in messages):
                return seen
    raise AssertionError(
        f"no matching message on {topic} within {within_seconds} s ({len(seen)} read)"
    )


async def read_topic(
    bootstrap_servers: str, topic: str, count: int, within_seconds: float = 30
) -> list[Any]:
    """Exactly `count` messages from the start of a topic: fails if fewer or more are there."""
    seen: list[Any] = []
    async with _reader(bootstrap_servers, topic) as consumer:
        deadline = asyncio.get_running_loop().time() + within_seconds
        while len(seen) < count and asyncio.get_running_loop().time() < deadline:
            seen.extend(await _poll(consumer, 500))
        seen.extend(await _poll(consumer, 1000))  # anything beyond `count` shows up here
    assert len(seen) == count, f"{topic}: expected {count} messages, read {len(seen)}"
    return seen


async def read_to_end(bootstrap_servers: str, topic: str, within_seconds: float = 30) -> list[Any]:
    """Every record a topic holds when called, read up to its end offsets: no waiting for the
    topic to go quiet, since a write acknowledged with acks=all is already there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        # The topic's partitions from fresh metadata: `consumer.topics()` would keep it to itself,
        # and the consumer's own bootstrap asked for no topic (Tansu answers with all, Kafka none).
        cluster = await consumer._client.fetch_all_metadata()
        numbers = sorted(cluster.partitions_for_topic(topic) or ())
        assert numbers, f"no topic {topic}"
        partitions = [TopicPartition(topic, number) for number in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        seen: list[Any] = []
        deadline = asyncio.get_running_loop().time() + within_seconds
        while [p for p in partitions if await consumer.position(p) < end[p]]:
            assert asyncio.get_running_loop().time() < deadline, f"{topic} not read to its end"
            seen.extend(await _poll(consumer, 500))
        return seen
    finally:
        await consumer.stop()


async def read_all(bootstrap_servers: str, topic: str, quiet_seconds: float = 2) -> list[Any]:
    """Everything in a topic: read from the start until nothing new arrives for a while."""
    seen: list[Any] = []
    async with _reader(bootstrap_servers, topic) as consumer:
        while batch := await _poll(consumer, int(quiet_seconds * 1000)):
            seen.extend(batch)
    return seen


async def wait_for(condition: Callable[[], bool], within_seconds: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within_seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within_seconds} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def example_result() -> bytes:
    return (REPO / "examples" / "lab-result-critical.json").read_bytes()


def unlabelled(html: str) -> str:
    """A page's HTML without the column labels its table cells carry for phones."""
    return re.sub(r' data-label="[^"]*"', "", html)
