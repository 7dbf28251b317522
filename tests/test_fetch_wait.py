"""Fetch waits: configured from the environment, and the classifier's consumer fetches with the
configured wait (faust's fixed 1.5 s was the floor of result-to-page latency on a broker that does
not answer a waiting fetch early). Speeds live in benchmarks/result_to_page.py, not here."""

import pytest

from services.classifier.service import group_consumer
from services.config import Settings

AIOKAFKA_DEFAULT_WAIT_MS = 500


def test_the_fetch_waits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATELETWATCH_CLASSIFIER_FETCH_MAX_WAIT_SECONDS", "0.2")
    monkeypatch.setenv("PLATELETWATCH_NOTIFIER_FETCH_MAX_WAIT_SECONDS", "0.3")
    settings = Settings()
    assert settings.classifier_fetch_max_wait_seconds == 0.2
    assert settings.notifier_fetch_max_wait_seconds == 0.3


def test_by_default_neither_consumer_waits_long_per_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLASSIFIER", "NOTIFIER"):
        monkeypatch.delenv(f"PLATELETWATCH_{name}_FETCH_MAX_WAIT_SECONDS", raising=False)
    settings = Settings()
    assert settings.classifier_fetch_max_wait_seconds <= 0.1
    assert settings.notifier_fetch_max_wait_seconds <= 0.1


def test_a_wait_of_zero_or_beyond_five_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="classifier_fetch_max_wait_seconds"):
        Settings(classifier_fetch_max_wait_seconds=0)
    with pytest.raises(ValueError, match="notifier_fetch_max_wait_seconds"):
        Settings(notifier_fetch_max_wait_seconds=6)


@pytest.mark.integration
@pytest.mark.one_broker(reason="the wait is the client's own; no broker behaviour is tested")
async def test_the_classifier_consumer_fetches_with_the_configured_wait(topics: Settings) -> None:
    settings = topics.model_copy(update={"classifier_fetch_max_wait_seconds": 0.07})
    consumer = group_consumer(settings, settings.kafka_bootstrap_servers or "")
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == 70 != AIOKAFKA_DEFAULT_WAIT_MS
    finally:
        await consumer.stop()
