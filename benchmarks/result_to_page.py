"""Result to page: how long after ingest answers 202 the on-call pager has the page.

The whole pipeline as `plateletwatch run` starts it: a broker (PLATELETWATCH_BROKER or
KAFKA_BOOTSTRAP_SERVERS choose it, as for every bench), the topics, then ingest, the classifier and
the notifier as their own processes, the notifier paging a loopback WebhookReceiver in this process
and keeping its store in an SQLite file. Every result is a critical count (12 x10^9/L) for a
patient of its own, sent as JSON over HTTP; its latency runs from the 202 to the first page naming
its result id (later escalation pages of the same alert are not counted).

Three phases, one after the other on the same pipeline:
- idle: BENCH_IDLE_RESULTS results, each sent only once the one before is paged, a random
  0.2-0.6 s apart, so each finds the consumers waiting on an idle broker: the floor the fetch
  waits set (PLATELETWATCH_CLASSIFIER_/NOTIFIER_FETCH_MAX_WAIT_SECONDS, read by the services);
- 5 results/s for BENCH_SLOW_SECONDS (default 60);
- 100 results/s for BENCH_SECONDS (default 180), with the p99 of the results sent in its first
  and in its last minute (or third, for a run shorter than 3 minutes) to show any upward drift.
A phase's results are sent at a fixed pace whatever the answers, and it ends once every result
is paged: a pipeline that falls behind shows as latency, not as a slower sender. Should no new
page arrive for BENCH_STALL_SECONDS (default 60) while some are owed, the bench stops, says how
many are missing and keeps the services' logs. `..._accepted_per_s` is the pace ingest really
answered 202 at: below the pace sent, ingest (or the machine) did not keep up, and results that
got no answer were sent again (`result_to_page_resent_by_error`).

Run with `make bench` (figures merged into bench-results.json).
"""

import asyncio
import json
import logging
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from benchmarks.results import record
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import free_loopback_port, provide_broker
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.processes import die_with_parent, stop_processes, wait_until_ready

FAST_RATE = 100.0
SLOW_RATE = 5.0
FAST_SECONDS = float(os.environ.get("BENCH_SECONDS", "180"))
SLOW_SECONDS = float(os.environ.get("BENCH_SLOW_SECONDS", "60"))
IDLE_RESULTS = int(os.environ.get("BENCH_IDLE_RESULTS", "20"))
STALL_SECONDS = float(os.environ.get("BENCH_STALL_SECONDS", "60"))
TOKEN = secrets.token_urlsafe(16)
REPO = Path(__file__).resolve().parents[1]

TARGETS = {
    "result_to_page_idle_p50_ms": "< 150",
    "result_to_page_5_per_s_p50_ms": "< 150",
    "result_to_page_5_per_s_p99_ms": "< 500",
    "result_to_page_p50_ms": "< 150",
    "result_to_page_p99_ms": "< 500",
    "result_to_page_p99_first_minute_ms": "< 500",
    "result_to_page_p99_last_minute_ms": "< 500",
}


class PagesStopped(RuntimeError):
    """Pages stopped arriving while some were still owed."""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value at least `fraction` of them do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _result(run: str, n: int) -> tuple[str, bytes]:
    """A critical count for a patient of its own, collected 20 minutes ago: (result id, body)."""
    now = datetime.now(UTC)
    result_id = f"BENCH-{run}-{n}"
    body = {
        "patient": {
            "identifier": {"authority": "urn:oid:2.16.840.1.113883.19.99", "mrn": result_id},
            "birth_date": "1960-01-01",
        },
        "result_id": result_id,
        "code": {"system": "http://loinc.org", "code": "777-3"},
        "value": "12",
        "unit": "10*9/L",
        "status": "final",
        "collected_at": (now - timedelta(minutes=20)).isoformat(),
        "verified_at": (now - timedelta(minutes=1)).isoformat(),
    }
    return result_id, json.dumps(body).encode()


class PageClock:
    """When each result id was first paged, read from the receiver's pages as they arrive."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self._receiver = receiver
        self._read = 0
        self.paged: dict[str, float] = {}
        self.raised: dict[str, float] = {}  # when the classifier raised the alert, same clock

    def _catch_up(self) -> None:
        pages = self._receiver.pages[self._read :]
        self._read += len(pages)
        monotonic_from_wall = time.monotonic() - time.time()
        for page in pages:
            alert = page.body["alert"]
            raised = datetime.fromisoformat(alert["raised_at"]).timestamp() + monotonic_from_wall
            for result in alert["evidence"]["results"]:
                self.paged.setdefault(result["result_id"], page.received_at)
                self.raised.setdefault(result["result_id"], raised)

    async def wait_for(self, wanted: set[str]) -> None:
        """Return once every result in `wanted` is paged; PagesStopped if no page arrives for
        STALL_SECONDS while some are owed."""
        last_news, seen = time.monotonic(), len(self._receiver.pages)
        while True:
            self._catch_up()
            missing = wanted - self.paged.keys()
            if not missing:
                return
            if len(self._receiver.pages) != seen:
                last_news, seen = time.monotonic(), len(self._receiver.pages)
            elif time.monotonic() - last_news > STALL_SECONDS:
                raise PagesStopped(
                    f"{len(missing)} of {len(wanted)} results not paged and no page for "
                    f"{STALL_SECONDS:g} s"
                )
            await asyncio.sleep(0.05)


class Lab:
    """Sends results to ingest as a lab does: again, after a short pause, when the connection
    fails or no answer comes (up to RESENDS times), counting the resends by error."""

    RESENDS = 5

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self.resent: Counter[str] = Counter()

    async def send(self, body: bytes) -> float:
        """The moment ingest answered 202; RuntimeError for any other answer or none."""
        for resend in range(self.RESENDS + 1):
            try:
                answer = await self._client.post("/v1/lab-results", content=body)
                break
            except httpx.TransportError as error:
                if resend == self.RESENDS:
                    raise RuntimeError(f"no answer from ingest: {error!r}") from error
                self.resent[type(error).__name__] += 1
                await asyncio.sleep(0.1)
        if answer.status_code != 202:
            raise RuntimeError(f"ingest answered {answer.status_code}: {answer.text[:200]}")
        return time.monotonic()


async def idle_latencies(lab: Lab, clock: PageClock) -> list[float]:
    """One result at a time into an idle pipeline; the first (connections opening) not counted."""
    pace = random.Random(17)
    latencies = []
    for n in range(IDLE_RESULTS + 1):
        result_id, body = _result("idle", n)
        accepted = await lab.send(body)
        await clock.wait_for({result_id})
        if n:
            latencies.append(clock.paged[result_id] - accepted)
        await asyncio.sleep(pace.uniform(0.2, 0.6))
    return latencies


async def paced(
    lab: Lab, clock: PageClock, name: str, rate: float, seconds: float
) -> tuple[list[tuple[float, float]], float]:
    """Results at `rate` per second for `seconds`, each sent on time whatever the answers to the
    ones before; returns (offset sent, latency) per result and the rate ingest accepted them."""
    count = max(1, round(rate * seconds))
    start = time.monotonic()
    accepted: dict[str, float] = {}

    async def send(n: int) -> None:
        result_id, body = _result(name, n)
        accepted[result_id] = await lab.send(body)

    sending = []
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        sending.append(asyncio.create_task(send(n)))
    await asyncio.gather(*sending)
    accepted_rate = count / (max(accepted.values()) - start)
    await clock.wait_for(set(accepted))
    timeline = sorted((at - start, clock.paged[rid] - at) for rid, at in accepted.items())
    raised = [clock.raised[rid] - at for rid, at in accepted.items()]
    print(
        f"{name}: 202 to alert raised p50 {_ms(percentile(raised, 0.5))} ms, "
        f"p99 {_ms(percentile(raised, 0.99))} ms (the rest is the notifier's)",
        flush=True,
    )
    return timeline, accepted_rate


@contextmanager
def pipeline(servers: str, receiver: WebhookReceiver, logs: Path) -> Iterator[str]:
    """Ingest, classifier and notifier running as their own processes, ready; yields ingest's
    base URL. The fetch waits and any other PLATELETWATCH_* setting come from this environment."""
    settings = Settings(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    asyncio.run(ensure_topics(settings, servers, create=True))
    ports = {name: free_loopback_port() for name in ("ingest", "classifier", "notifier")}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": servers,
        "PLATELETWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "PLATELETWATCH_INGEST_PORT": str(ports["ingest"]),
        "PLATELETWATCH_INGEST_MLLP_PORT": str(free_loopback_port()),
        "PLATELETWATCH_CLASSIFIER_PORT": str(ports["classifier"]),
        "PLATELETWATCH_NOTIFIER_PORT": str(ports["notifier"]),
        "PLATELETWATCH_INGEST_API_TOKENS": json.dumps([TOKEN]),
        "PLATELETWATCH_NOTIFIER_WEBHOOK_URL": receiver.url,
        "PLATELETWATCH_NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{logs / 'notifier.sqlite3'}",
        "PLATELETWATCH_NOTIFIER_LINK_SECRET": secrets.token_urlsafe(32),
        "PLATELETWATCH_NOTIFIER_SESSION_SECRET": secrets.token_urlsafe(32),
    }
    processes = []
    try:
        for name, port in ports.items():
            with (logs / f"{name}.log").open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "services.cli", name],
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )
            processes.append(process)
            ready = f"http://{settings.bind_host}:{port}/readyz"
            wait_until_ready(name, ready, process, time.monotonic() + 120)
        yield f"http://{settings.bind_host}:{ports['ingest']}"
    finally:
        stop_processes(processes, grace_seconds=20)


async def measure(ingest: str, receiver: WebhookReceiver) -> dict[str, object]:
    clock = PageClock(receiver)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=ingest, headers=headers, limits=limits, timeout=60
    ) as client:
        lab = Lab(client)
        idle = await idle_latencies(lab, clock)
        print(f"idle: p50 {_ms(percentile(idle, 0.5))} ms over {len(idle)} results", flush=True)
        slow, slow_rate = await paced(lab, clock, "slow", SLOW_RATE, SLOW_SECONDS)
        slow_latencies = [latency for _, latency in slow]
        print(f"{SLOW_RATE:g}/s: p50 {_ms(percentile(slow_latencies, 0.5))} ms", flush=True)
        fast, fast_rate = await paced(lab, clock, "fast", FAST_RATE, FAST_SECONDS)
    latencies = [latency for _, latency in fast]
    window = min(60.0, FAST_SECONDS / 3)
    first = [latency for sent, latency in fast if sent < window]
    last = [latency for sent, latency in fast if sent >= FAST_SECONDS - window]
    return {
        "result_to_page_idle_p50_ms": _ms(percentile(idle, 0.5)),
        "result_to_page_idle_results": len(idle),
        "result_to_page_5_per_s_p50_ms": _ms(percentile(slow_latencies, 0.5)),
        "result_to_page_5_per_s_p99_ms": _ms(percentile(slow_latencies, 0.99)),
        "result_to_page_5_per_s_accepted_per_s": round(slow_rate, 1),
        "result_to_page_5_per_s_seconds": SLOW_SECONDS,
        "result_to_page_p50_ms": _ms(percentile(latencies, 0.5)),
        "result_to_page_p99_ms": _ms(percentile(latencies, 0.99)),
        "result_to_page_p99_first_minute_ms": _ms(percentile(first, 0.99)),
        "result_to_page_p99_last_minute_ms": _ms(percentile(last, 0.99)),
        "result_to_page_max_ms": _ms(max(latencies)),
        "result_to_page_drift_window_s": round(window, 1),
        "result_to_page_rate_per_s": FAST_RATE,
        "result_to_page_accepted_per_s": round(fast_rate, 1),
        "result_to_page_seconds": FAST_SECONDS,
        "result_to_page_resent_by_error": dict(lab.resent),
    }


def main() -> None:
    settings = Settings()
    logging.getLogger("plateletwatch.demo_pager").setLevel(logging.ERROR)  # a line per page
    logs = Path(tempfile.mkdtemp(prefix="plateletwatch-result-to-page-"))
    receiver = WebhookReceiver()
    receiver.start()
    try:
        with provide_broker(settings.kafka_bootstrap_servers, requested=settings.broker) as broker:
            with pipeline(broker.bootstrap_servers, receiver, logs) as ingest:
                figures = asyncio.run(measure(ingest, receiver))
            figures["result_to_page_broker"] = broker.kind.value
    except (RuntimeError, httpx.HTTPError) as error:  # PagesStopped included
        sys.exit(f"result_to_page: {error!r}; the services' logs are in {logs}")
    finally:
        receiver.stop()
    shutil.rmtree(logs)
    figures["result_to_page_classifier_fetch_max_wait_s"] = (
        settings.classifier_fetch_max_wait_seconds
    )
    figures["result_to_page_notifier_fetch_max_wait_s"] = settings.notifier_fetch_max_wait_seconds
    record(figures, TARGETS)


if __name__ == "__main__":
    main()
