"""What ops see: a real Prometheus scrapes the three running services while results for several
patients flow through; the key series exist and move, every Grafana panel's query is accepted,
and no label carries a patient or grows with the number of patients."""

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import HttpUrl

from services.config import Settings
from services.kafka.broker import free_loopback_port
from services.processes import wait_until_ready
from tests.conftest import AUTH, REPO, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus is not installed (Debian package 'prometheus'; make test installs it "
        "where apt-get runs as root)",
    ),
]

SERVICES = ("ingest", "classifier", "notifier")
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? ")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture
def running(topics: Settings, webhook_receiver, start_service) -> Settings:
    settings = topics.model_copy(update={"notifier_webhook_url": HttpUrl(webhook_receiver.url)})
    for name in SERVICES:
        port = getattr(settings, f"{name}_port")
        start_service(name, settings).wait_ready(f"http://{settings.bind_host}:{port}/readyz")
    return settings


@pytest.fixture
def prometheus(running: Settings, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus on loopback scraping the services every second; its base URL."""
    host = running.bind_host
    targets = "\n".join(
        f"  - job_name: plateletwatch-{name}\n"
        f"    static_configs: [{{targets: ['{host}:{getattr(running, f'{name}_port')}']}}]"
        for name in SERVICES
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n{targets}\n")
    port = free_loopback_port()
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready("prometheus", f"{base}/-/ready", server, time.monotonic() + 60)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    return list(answer.json()["data"]["result"])


def _value(prometheus: str, expr: str) -> float:
    result = _query(prometheus, expr)
    return float(result[0]["value"][1]) if result else 0.0


def _series(settings: Settings) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and labels on the three /metrics endpoints."""
    found = set()
    for name in SERVICES:
        url = f"http://{settings.bind_host}:{getattr(settings, f'{name}_port')}/metrics"
        for line in httpx.get(url, timeout=5).text.splitlines():
            match = SAMPLE.match(line)
            if match and not line.startswith("#"):
                labels = tuple(sorted(LABEL.findall(match.group("labels") or "")))
                found.add((match.group("name"), labels))
    return found


def _dashboard_answers(prometheus: str) -> dict[str, bool]:
    """Each panel of the dashboard: whether any of its queries returned data, with every
    instance chosen (as the dashboard opens). A query that Prometheus refuses fails the test,
    naming the panel."""
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/plateletwatch.json").read_text())
    answered: dict[str, bool] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$instance", ".*")  # the variable's "All"
            reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
            assert reply.status_code == 200, f"{panel['title']}: {expr}: {reply.text}"
            has_data = bool(reply.json()["data"]["result"])
            answered[panel["title"]] = answered.get(panel["title"], False) or has_data
    return answered


def _per_partition(
    series: set[tuple[str, tuple[tuple[str, str], ...]]],
) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The series with every partition number replaced by '*'."""
    return {
        (name, tuple((k, "*" if k == "partition" else v) for k, v in pairs))
        for name, pairs in series
    }


def _result(example: bytes, mrn: str) -> bytes:
    body = json.loads(example)
    body["patient"]["identifier"]["mrn"] = mrn
    body["result_id"] = f"LAB-{mrn}"
    return json.dumps(body).encode()


async def _post_patients(settings: Settings, example: bytes, mrns: list[str]) -> None:
    url = f"http://{settings.bind_host}:{settings.ingest_port}/v1/lab-results"
    async with httpx.AsyncClient(headers=AUTH) as client:
        for mrn in mrns:
            answer = await client.post(url, content=_result(example, mrn))
            assert answer.status_code == 202, answer.text


async def test_prometheus_sees_the_pipeline_and_no_patient_in_any_label(
    running: Settings, prometheus: str, webhook_receiver, example_result: bytes
) -> None:
    await wait_for(
        lambda: _value(prometheus, 'count(up{job=~"plateletwatch-.*"} == 1)') == 3,
        60,
        "Prometheus scraping all three services",
    )
    first = [f"MRN-OBS-{n}" for n in range(3)]
    await _post_patients(running, example_result, first)
    await wait_for(lambda: len(webhook_receiver.pages) == 3, 60, "three pages")
    series_after_three = _series(running)

    more = [f"MRN-OBS-{n}" for n in range(3, 9)]
    await _post_patients(running, example_result, more)
    await wait_for(lambda: len(webhook_receiver.pages) == 9, 60, "nine pages")
    series_after_nine = _series(running)

    # Bounded labels: more patients add no series (beyond one per partition, as more partitions
    # see traffic), and no label value names a patient.
    partitions = {v for _, pairs in series_after_nine for k, v in pairs if k == "partition"}
    assert partitions <= {str(p) for p in range(running.partitions)}
    assert _per_partition(series_after_nine) == _per_partition(series_after_three)
    labels = " ".join(value for _, pairs in series_after_nine for _, value in pairs)
    assert "MRN-OBS" not in labels
    assert "2.16.840.1.113883.19.5" not in labels  # the assigning authority either

    # The key series exist in Prometheus and moved by what was sent.
    alerts = 'sum(plateletwatch_classifier_alerts_total{alert_kind="critical_low"})'
    published = 'sum(plateletwatch_ingest_entries_total{outcome="published"})'
    delivered = 'sum(plateletwatch_notifier_deliveries_total{outcome="delivered"})'
    first_page = "sum(plateletwatch_result_verified_to_first_page_seconds_count)"
    for expr in (alerts, published, delivered, first_page):
        await wait_for(lambda e=expr: _value(prometheus, e) == 9, 30, expr)
    # Every panel of the Grafana dashboard is a query Prometheus accepts, and the panels about
    # what just happened show data once a rate has its two scrapes (a fast broker can deliver
    # all nine pages before a new counter is scraped twice).
    for panel in ("Lab results by feed and outcome (per minute)", "Alerts by kind (per hour)"):
        await wait_for(lambda p=panel: _dashboard_answers(prometheus)[p], 10, f"data for {panel!r}")

    # Every service says what it runs; both consumers report their lag from the broker, which
    # comes to 0 once the groups have committed (faust commits every few seconds, the lag is
    # polled every 5 s and scraped every second).
    assert _value(prometheus, "count(plateletwatch_build_info)") == 3
    for lag in ("plateletwatch_classifier_consumer_lag", "plateletwatch_notifier_consumer_lag"):
        await wait_for(lambda q=lag: _query(prometheus, q) != [], 30, lag)
        await wait_for(lambda q=lag: _value(prometheus, f"max({q})") == 0, 30, f"{lag} at 0")
