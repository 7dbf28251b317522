"""The classifier as a faust-streaming worker: decode, call the engine, publish alerts.

One agent reads lab.results.v1 and clinical.context.v1 together (co-partitioned by patient), so a
patient's results and treatments are applied in order to one history, kept in a faust table
backed by a compacted changelog. Processing is at-least-once: faust flushes the alerts and the
changelog before committing offsets; after a crash an event may be applied again, and the alerts
it yields carry the same alert_id, the notifier's dedupe key.
"""

import logging
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from pydantic import ValidationError

import services.build_info  # noqa: F401 - registers plateletwatch_build_info
from schemas import LabResult, Topic, clinical_context_adapter
from services.classifier.engine import History, apply
from services.classifier.rules import Rules
from services.classifier.topology import PATIENT_STATE_TABLE
from services.config import Settings

log = logging.getLogger(__name__)

EVENTS = Counter(
    "plateletwatch_classifier_events_total",
    "Events the classifier consumed, by kind and outcome.",
    ["kind", "outcome"],
)
ALERTS = Counter(
    "plateletwatch_classifier_alerts_total", "Alerts emitted, by alert kind.", ["alert_kind"]
)
SUPPRESSED = Counter(
    "plateletwatch_classifier_suppressed_repeats_total",
    "Repeat critical values not paged (within an open episode, not low enough, too soon).",
)
LAG = Gauge(
    "plateletwatch_classifier_consumer_lag",
    "Events not yet read on each input partition, as the classifier last saw it.",
    ["input", "partition"],
)


def _record_lag(app: faust.App, kind: str, message: Any) -> None:
    """Events behind this one on its partition (partitions are few: a bounded label)."""
    highwater = app.consumer.highwater(message.tp)
    if highwater is not None:
        behind = max(0, highwater - message.offset - 1)
        LAG.labels(input=kind, partition=str(message.partition)).set(behind)


def create_app(settings: Settings, bootstrap_servers: str, rules: Rules) -> faust.App:
    """Build the faust app; topics must already exist (`plateletwatch topics`)."""
    app = faust.App(
        settings.group_id("classifier"),
        broker=[f"kafka://{server}" for server in bootstrap_servers.split(",")],
        store=settings.classifier_store,
        datadir=str(settings.classifier_data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        broker_session_timeout=settings.classifier_session_timeout_seconds,
        broker_rebalance_timeout=settings.classifier_session_timeout_seconds,
        broker_heartbeat_interval=settings.classifier_session_timeout_seconds / 4,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.bind_host,
        web_host=settings.bind_host,
        web_port=settings.classifier_port,
    )
    lab_results = settings.topic(Topic.LAB_RESULTS)
    patient_events = app.topic(
        lab_results,
        settings.topic(Topic.CLINICAL_CONTEXT),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    alerts = app.topic(
        settings.topic(Topic.PLATELET_ALERTS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    histories = app.Table(
        PATIENT_STATE_TABLE,
        partitions=settings.partitions,
        schema=faust.Schema(key_serializer="raw", value_serializer="json"),
    )

    @app.agent(patient_events)
    async def classify(stream: Any) -> None:
        async for event in stream.events():
            kind = "lab_result" if event.message.topic == lab_results else "clinical_context"
            _record_lag(app, kind, event.message)
            try:
                decoded = (
                    LabResult.model_validate_json(event.value)
                    if kind == "lab_result"
                    else clinical_context_adapter.validate_json(event.value)
                )
            except ValidationError as error:
                EVENTS.labels(kind=kind, outcome="invalid").inc()
                log.error("skipping an undecodable %s event: %d errors", kind, error.error_count())
                continue
            stored = histories.get(event.key)
            history = History.from_json(stored) if stored else History()
            duplicate = history.has_applied(decoded)
            suppressed_before = history.suppressed_repeats
            emitted = apply(history, decoded, rules, datetime.now(UTC))
            SUPPRESSED.inc(max(0, history.suppressed_repeats - suppressed_before))
            for alert in emitted:
                await alerts.send(key=event.key, value=alert.model_dump_json().encode())
                ALERTS.labels(alert_kind=alert.kind.value).inc()
            histories[event.key] = history.to_json()
            EVENTS.labels(kind=kind, outcome="duplicate" if duplicate else "evaluated").inc()

    @app.page("/healthz")
    async def healthz(view: Any, request: Any) -> Any:
        return view.json({"status": "ok", "service": "classifier"})

    @app.page("/readyz")
    async def readyz(view: Any, request: Any) -> Any:
        # Ready once the group join gave this worker partitions to own.
        ready = not app.rebalancing and bool(app.consumer.assignment())
        return view.json(
            {"status": "ready" if ready else "not ready", "service": "classifier"},
            status=200 if ready else 503,
        )

    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type=, so the header is set whole.
        return view.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def run_worker(app: faust.App, log_level: str) -> None:
    """Run until SIGTERM/SIGINT; faust owns the event loop and stops the app cleanly."""
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.execute_from_commandline()
