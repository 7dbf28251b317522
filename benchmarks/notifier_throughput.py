"""Notifier capacity: distinct alerts paged per second through the notifier's real path.

Alerts go through `Escalator.receive_many` in batches of the consumer's ALERT_BATCH, as the
alert consumer hands over what it fetched: the chains stored, their first levels claimed and
fired, each message rendered and POSTed by the webhook channel to a loopback receiver (the demo
pager, `plateletwatch demo-pager`, in a process of its own as a pager is: in this one its thread
would hold the notifier's GIL), every step an audit row and a DeliveryEvent acknowledged by the
broker (EventPublisher, the notifier's own). The Kafka consume and commit of the alerts
themselves are left out: they cost the same per record whatever the notifier does with it.

The store is first filled with BENCH_NOTIFIER_HISTORY closed chains, so a cost that grows with
the history rather than with the open alerts shows. Run against an SQLite file and against
PostgreSQL (PLATELETWATCH_TEST_POSTGRES_URL, else a throwaway server from tests/postgres_server.py;
skipped with the reason printed where neither exists).

Beside each rate, the notifier process's CPU time per alert (the receiver runs apart): on a
machine shared with other work the rate follows the load, the CPU time much less.

Run with `make bench` (figures merged into bench-results.json). BENCH_NOTIFIER_ALERTS and
BENCH_NOTIFIER_HISTORY scale it.
"""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from benchmarks.results import record
from schemas import AlertKind, DeliveryEvent, Patient, PatientIdentifier, PlateletAlert, Topic
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import provide_broker
from services.kafka.producer import EventPublisher
from services.notifier.app import ALERT_BATCH
from services.notifier.delivery.attempts import AlertDelivery, RetryPolicy
from services.notifier.delivery.channels.webhook import WebhookChannel
from services.notifier.delivery.escalator import Escalator
from services.notifier.domain.escalation import load_escalation_policy, schedule
from services.notifier.domain.roster import Person, Roster
from services.notifier.store.repository import NotifierStore
from services.notifier.store.tables import Closing
from tests.alert_factory import NIGHT, alert, count
from tests.postgres_server import PostgresUnavailable, provide_postgres

ALERTS = int(os.environ.get("BENCH_NOTIFIER_ALERTS", "2000"))
HISTORY = int(os.environ.get("BENCH_NOTIFIER_HISTORY", "5000"))
TARGET = ">= 300"  # issue 17, on each store


def _alert(n: int) -> PlateletAlert:
    patient = Patient(
        identifier=PatientIdentifier(authority="BENCH", mrn=f"{n:07d}"),
        birth_date=datetime(1950 + n % 60, 1, 1).date(),
    )
    return alert(AlertKind.CRITICAL_LOW, [count(9, NIGHT)], f"bench-{n}", patient=patient)


async def _fill_history(store: NotifierStore, count_: int) -> None:
    """`count_` chains opened and acknowledged long ago, as a year of service leaves them."""
    policy = load_escalation_policy()
    then = NIGHT - timedelta(days=365)
    template = alert(AlertKind.CRITICAL_LOW, [count(9, then)], "history").model_dump_json()
    for n in range(count_):
        alert_id = f"history-{n}"
        steps = [(d.level, d.tier, d.at) for d in schedule(policy, AlertKind.CRITICAL_LOW, then)]
        await store.open_escalation(alert_id, template, steps)
        await store.close(alert_id, Closing.ACKNOWLEDGED, "primary", then)


@contextlib.contextmanager
def _demo_pager() -> Iterator[str]:
    """A demo pager process on a free loopback port; its URL for pages (GET lists them)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PLATELETWATCH_DEMO_RECEIVER_PORT": str(port)}
    pager = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo-pager"], env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/pages"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url.replace("/pages", "/healthz")).is_success:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("the demo pager did not start")
        yield url
    finally:
        pager.terminate()
        pager.wait()


async def _alerts_per_second(
    database_url: str, servers: str, settings: Settings, receiver: str
) -> tuple[float, float]:
    store = NotifierStore(database_url)
    publisher = EventPublisher(servers, "bench-notifier", settings.kafka_produce_timeout_seconds)
    await store.start()
    await publisher.start()
    try:
        await _fill_history(store, HISTORY)

        async def publish(patient_key: str, event: DeliveryEvent) -> None:
            await publisher.publish(settings.topic(Topic.NOTIFIER_DELIVERIES), patient_key, event)

        delivery = AlertDelivery(
            store, {"webhook": WebhookChannel(5.0)}, RetryPolicy(3, 0.1), publish
        )
        pager = Person(id="on-call", name="On call", channel="webhook", address=receiver)
        escalator = Escalator(
            store,
            delivery,
            Roster.everyone_to(pager),
            load_escalation_policy(),
            b"bench-link-secret-0123456789abcdef",
            "https://notifier.bench.example",
            timedelta(hours=24),
            UTC,
        )
        alerts = [_alert(n) for n in range(ALERTS)]
        now = datetime.now(UTC)
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(alerts), ALERT_BATCH):
            await escalator.receive_many(alerts[first : first + ALERT_BATCH], now)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await delivery.close()
        async with httpx.AsyncClient(timeout=30) as client:
            received = len((await client.get(receiver)).json())
        if received != ALERTS:
            raise RuntimeError(f"{received} pages received for {ALERTS} alerts")
        return ALERTS / elapsed, 1000 * cpu / ALERTS
    finally:
        await publisher.stop()
        await store.stop()


async def _on_postgresql(
    admin_url: str, servers: str, settings: Settings, receiver: str
) -> tuple[float, float]:
    server = make_url(admin_url)
    name = f"plateletwatch_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(drivername="postgresql+asyncpg", database=name)
        return await _alerts_per_second(url.render_as_string(False), servers, settings, receiver)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    settings = Settings(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    figures: dict[str, object] = {
        "notifier_alerts": ALERTS,
        "notifier_history_chains": HISTORY,
        "notifier_alert_batch": ALERT_BATCH,
    }
    with provide_broker(settings.kafka_bootstrap_servers, requested=settings.broker) as broker:
        servers = broker.bootstrap_servers
        asyncio.run(ensure_topics(settings, servers, create=True))
        figures["notifier_broker"] = broker.kind.value
        with tempfile.TemporaryDirectory() as directory:
            sqlite = f"sqlite+aiosqlite:///{Path(directory) / 'notifier.sqlite3'}"
            with _demo_pager() as receiver:
                rate, cpu = asyncio.run(_alerts_per_second(sqlite, servers, settings, receiver))
            figures["notifier_alerts_per_s_sqlite"] = round(rate, 1)
            figures["notifier_cpu_ms_per_alert_sqlite"] = round(cpu, 2)
        try:
            with provide_postgres(os.environ.get("PLATELETWATCH_TEST_POSTGRES_URL")) as admin:
                with _demo_pager() as receiver:
                    rate, cpu = asyncio.run(_on_postgresql(admin, servers, settings, receiver))
                figures["notifier_alerts_per_s_postgresql"] = round(rate, 1)
                figures["notifier_cpu_ms_per_alert_postgresql"] = round(cpu, 2)
        except PostgresUnavailable as reason:
            print(f"notifier on PostgreSQL skipped: {reason}")
    targets = {key: TARGET for key in figures if key.startswith("notifier_alerts_per_s_")}
    record(figures, targets)


if __name__ == "__main__":
    main()
