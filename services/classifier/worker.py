"""The classifier as a faust-streaming worker: decode, call the rule engine, publish alerts.

Patient state lives in a faust table backed by a compacted changelog whose partition count matches
lab.results.v1. Processing is at-least-once: after a crash a result may be evaluated again, and the
alert it produces carries the same alert_id, which is the notifier's dedupe key.
"""

import logging
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import ValidationError

from schemas import LabResult, Topic
from services.classifier.rules import PatientState, Rules, evaluate
from services.classifier.topology import PATIENT_STATE_TABLE
from services.config import Settings

log = logging.getLogger(__name__)

EVENTS = Counter(
    "plateletwatch_classifier_events_total",
    "Events the classifier consumed, by topic kind and outcome.",
    ["kind", "outcome"],
)
ALERTS = Counter(
    "plateletwatch_classifier_alerts_total", "Alerts emitted, by alert kind.", ["alert_kind"]
)


def create_app(settings: Settings, bootstrap_servers: str, rules: Rules) -> faust.App:
    """Build the faust app; topics must already exist (`plateletwatch topics`)."""
    app = faust.App(
        settings.group_id("classifier"),
        broker=[f"kafka://{server}" for server in bootstrap_servers.split(",")],
        store="memory://",
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
    lab_results = app.topic(
        settings.topic(Topic.LAB_RESULTS),
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
    patient_state = app.Table(
        PATIENT_STATE_TABLE,
        partitions=settings.partitions,
        schema=faust.Schema(key_serializer="raw", value_serializer="json"),
    )

    @app.agent(lab_results)
    async def classify_lab_results(stream: Any) -> None:
        async for key, raw in stream.items():
            try:
                result = LabResult.model_validate_json(raw)
            except ValidationError as error:
                EVENTS.labels(kind="lab_result", outcome="invalid").inc()
                log.error("skipping an undecodable lab result: %d errors", error.error_count())
                continue
            stored = patient_state.get(key)
            state = PatientState.model_validate(stored) if stored else PatientState()
            evaluation = evaluate(state, result, rules, datetime.now(UTC))
            for alert in evaluation.alerts:
                await alerts.send(key=key, value=alert.model_dump_json().encode())
                ALERTS.labels(alert_kind=alert.kind.value).inc()
            patient_state[key] = evaluation.state.model_dump(mode="json")
            outcome = "duplicate" if evaluation.duplicate else "evaluated"
            EVENTS.labels(kind="lab_result", outcome=outcome).inc()

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
