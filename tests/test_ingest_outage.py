"""Nothing acknowledged that is not durable: with Kafka down, ingest answers 503, never 202/422."""

import asyncio
import time

import httpx
import pytest

from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import EmbeddedTansu
from tests.conftest import AUTH

pytestmark = [
    pytest.mark.integration,
    pytest.mark.one_broker(
        reason="loses a Tansu broker of its own; the session broker plays no part"
    ),
]


async def test_ingest_answers_503_while_kafka_is_down(
    own_broker: EmbeddedTansu, settings: Settings, start_service, example_result: bytes
) -> None:
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": own_broker.bootstrap_servers,
            "kafka_produce_timeout_seconds": 3,
        }
    )
    await ensure_topics(settings, own_broker.bootstrap_servers, create=True)
    ingest = start_service("ingest", settings)
    base = f"http://{settings.bind_host}:{settings.ingest_port}"
    ingest.wait_ready(f"{base}/readyz")
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=AUTH) as client:
        assert (await client.post("/v1/lab-results", content=example_result)).status_code == 202
        own_broker.stop()
        started = time.monotonic()
        refused = await client.post("/v1/lab-results", content=example_result)
        # A malformed body cannot be dead-lettered either: the sender must retry, not drop it.
        malformed = await client.post("/v1/lab-results", content=b"{")
        elapsed = time.monotonic() - started
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "5"
    assert "retry" in refused.json()["detail"]
    assert malformed.status_code == 503
    assert elapsed < 20  # two writes, each bounded by the 3 s produce timeout
    assert ingest.process.poll() is None, "ingest must keep running through a broker outage"


async def test_readiness_follows_the_broker(
    own_broker: EmbeddedTansu, settings: Settings, start_service
) -> None:
    """Measured: /readyz said ready while the broker was down."""
    settings = settings.model_copy(update={"kafka_bootstrap_servers": own_broker.bootstrap_servers})
    await ensure_topics(settings, own_broker.bootstrap_servers, create=True)
    ingest = start_service("ingest", settings)
    base = f"http://{settings.bind_host}:{settings.ingest_port}"
    ingest.wait_ready(f"{base}/readyz")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def readiness_within(seconds: float, status: int) -> float:
            started = time.monotonic()
            while (await client.get("/readyz")).status_code != status:
                assert time.monotonic() - started < seconds, f"/readyz not {status}"
                await asyncio.sleep(0.2)
            return time.monotonic() - started

        own_broker.stop()
        assert await readiness_within(10, 503) < 10
        own_broker.start()  # the same address again
        assert await readiness_within(15, 200) < 15
    assert ingest.process.poll() is None
