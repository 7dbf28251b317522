"""One result end to end: ingest -> broker -> classifier -> broker -> notifier -> webhook.

The three services run as real processes against the session's broker; the page lands on a real
HTTP receiver on loopback. Written as a timeline: post at t=0, page expected within a minute.
"""

import json
from pathlib import Path

import httpx
import pytest
from pydantic import HttpUrl

from schemas import DeadLetter, DeliveryEvent, DeliveryStep, Topic
from services.config import Settings
from tests.conftest import AUTH, consume_until, service_logs, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(topics: Settings, webhook_receiver, start_service) -> Settings:
    settings = topics.model_copy(update={"notifier_webhook_url": HttpUrl(webhook_receiver.url)})
    host = settings.bind_host
    services = [
        (start_service("ingest", settings), f"http://{host}:{settings.ingest_port}/readyz"),
        (start_service("classifier", settings), f"http://{host}:{settings.classifier_port}/readyz"),
        (start_service("notifier", settings), f"http://{host}:{settings.notifier_port}/readyz"),
    ]
    for service, ready_url in services:
        service.wait_ready(ready_url)
    return settings


def _metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        series_name, _, label_text = series.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if series_name == name and found == wanted:
            return float(value)
    return 0.0


async def test_a_critical_result_is_paged_once(
    pipeline: Settings, webhook_receiver, example_result: bytes, tmp_path: Path
) -> None:
    ingest = f"http://{pipeline.bind_host}:{pipeline.ingest_port}"
    async with httpx.AsyncClient(base_url=ingest, headers=AUTH) as client:
        accepted = await client.post("/v1/lab-results", content=example_result)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["outcome"] == "published"
        await wait_for(lambda: len(webhook_receiver.pages) >= 1, 60, "the page")

        resent = await client.post("/v1/lab-results", content=example_result)
        assert resent.json()["event_id"] == accepted.json()["event_id"]

    (page,) = webhook_receiver.pages
    alert = page.body["alert"]
    submitted = json.loads(example_result)
    assert alert["kind"] == "critical_low"
    assert alert["value_10e9_per_l"] == 12
    assert alert["patient"]["identifier"] == submitted["patient"]["identifier"]
    assert alert["evidence"]["results"][0]["result_id"] == submitted["result_id"]
    assert page.headers["Idempotency-Key"] == alert["alert_id"]

    deliveries = await consume_until(
        pipeline.kafka_bootstrap_servers or "",
        pipeline.topic(Topic.NOTIFIER_DELIVERIES),
        lambda m: DeliveryEvent.model_validate_json(m.value).step is DeliveryStep.DELIVERED,
    )
    delivered = [DeliveryEvent.model_validate_json(m.value) for m in deliveries]
    assert {d.alert_id for d in delivered} == {alert["alert_id"]}

    # The resent result reached the classifier too: recognised as a duplicate, not paged again.
    await wait_for(lambda: _classifier_events(pipeline, "duplicate") == 1, 30, "the duplicate")
    assert _classifier_events(pipeline, "evaluated") == 1

    # The page's acknowledge link works once; a replayed or forged link is refused.
    ack = page.body["actions"]["acknowledge"]
    assert ack.startswith(f"http://{pipeline.bind_host}:{pipeline.notifier_port}/v1/links/")
    async with httpx.AsyncClient() as client:
        opened = await client.get(ack)  # a mail scanner or a click: shows, changes nothing
        assert opened.status_code == 200
        assert "Acknowledge</button>" in opened.text
        assert '<svg role="img"' in opened.text
        assert "frame-ancestors 'none'" in opened.headers["Content-Security-Policy"]
        acked = await client.post(ack)
        assert acked.json() == {"alert_id": alert["alert_id"], "action": "acknowledge"}
        replayed = await client.post(ack)
        assert (replayed.status_code, replayed.json()["error"]) == (
            403,
            "the link has been used already",
        )
        forgery = ack[:-4] + ("AAAA" if not ack.endswith("AAAA") else "BBBB")
        forged = await client.post(forgery)
        assert (forged.status_code, forged.json()["error"]) == (403, "the link is not genuine")
        forged_page = await client.get(forgery)
        assert forged_page.status_code == 403
        assert "This link cannot be used: the link is not genuine." in forged_page.text
        used_page = await client.get(ack)
        assert (used_page.status_code, "used already" in used_page.text) == (403, True)

        # A console or another system acts through the API with a bearer token.
        notifier = f"http://{pipeline.bind_host}:{pipeline.notifier_port}"
        action = {"action": "resolve", "by": "haematology-registrar"}
        url = f"{notifier}/v1/alerts/{alert['alert_id']}/actions"
        assert (await client.post(url, json=action)).status_code == 401
        resolved = await client.post(url, json=action, headers=AUTH)
        assert resolved.json() == {"alert_id": alert["alert_id"], "action": "resolve"}
        unknown = await client.post(f"{notifier}/v1/alerts/nope/actions", json=action, headers=AUTH)
        assert unknown.status_code == 404

    mrn = submitted["patient"]["identifier"]["mrn"]
    logs = service_logs(tmp_path)
    assert set(logs) == {"ingest.log", "classifier.log", "notifier.log"}
    assert [name for name, text in logs.items() if mrn in text] == [], "PHI in service logs"
    assert len(webhook_receiver.pages) == 1


def _classifier_events(settings: Settings, outcome: str) -> float:
    url = f"http://{settings.bind_host}:{settings.classifier_port}/metrics"
    text = httpx.get(url, timeout=5).text
    return _metric(
        text, "plateletwatch_classifier_events_total", kind="lab_result", outcome=outcome
    )


async def test_every_service_reports_health_and_metrics(pipeline: Settings, example_result) -> None:
    host = pipeline.bind_host
    async with httpx.AsyncClient(headers=AUTH) as client:
        await client.post(
            f"http://{host}:{pipeline.ingest_port}/v1/lab-results", content=example_result
        )
        for port in (pipeline.ingest_port, pipeline.classifier_port, pipeline.notifier_port):
            health = await client.get(f"http://{host}:{port}/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            metrics = await client.get(f"http://{host}:{port}/metrics")
            assert metrics.status_code == 200
            assert "plateletwatch_" in metrics.text
            assert "MRN-000123" not in metrics.text
        ingest_metrics = (await client.get(f"http://{host}:{pipeline.ingest_port}/metrics")).text
    assert (
        _metric(
            ingest_metrics, "plateletwatch_ingest_inputs_total", source="json", outcome="published"
        )
        == 1
    )


async def test_a_malformed_result_is_refused_dead_lettered_and_ingest_keeps_running(
    pipeline: Settings, webhook_receiver, example_result: bytes
) -> None:
    ingest = f"http://{pipeline.bind_host}:{pipeline.ingest_port}"
    broken = example_result.replace(b'"collected_at": "2026-11-25T07:40:00+01:00", ', b"")
    assert broken != example_result
    async with httpx.AsyncClient(base_url=ingest, headers=AUTH) as client:
        refused = await client.post(
            "/v1/lab-results", content=broken, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 422
        body = refused.json()
        assert body["reason"] == "invalid_fields"
        assert {"loc": "collected_at", "msg": "Field required", "type": "missing"} in body["errors"]

        letters = await consume_until(
            pipeline.kafka_bootstrap_servers or "",
            pipeline.topic(Topic.INGEST_DEADLETTER),
            lambda m: DeadLetter.model_validate_json(m.value).event_id == body["dead_letter_id"],
        )
        letter = DeadLetter.model_validate_json(letters[-1].value)
        assert letter.raw_payload.encode() == broken
        assert letter.reason_code == "invalid_fields"
        assert letter.content_type == "application/json"

        not_json = await client.post("/v1/lab-results", content=b"PID|1||42")
        assert not_json.status_code == 422
        assert not_json.json()["reason"] == "invalid_json"

        still_working = await client.post("/v1/lab-results", content=example_result)
        assert still_working.status_code == 202
    await wait_for(lambda: len(webhook_receiver.pages) == 1, 60, "the page after the refusals")
