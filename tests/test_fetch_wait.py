"""Fetch waits: configured from the environment, and the classifier's faust consumer fetches
with the configured wait instead of faust's fixed 1.5 s (a broker that does not answer a waiting
fetch early made that the floor of result-to-page latency). Speeds live in
benchmarks/result_to_page.py, not here."""

import asyncio
from pathlib import Path

import pytest

from services.classifier.rules import load_rules
from services.classifier.worker import create_app
from services.config import Settings
from services.kafka.fetch_wait import wait_at_most

FAUST_FIXED_WAIT_MS = 1500


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
async def test_the_classifier_consumer_fetches_with_the_configured_wait(
    topics: Settings, tmp_path: Path
) -> None:
    settings = topics.model_copy(
        update={"classifier_fetch_max_wait_seconds": 0.07, "classifier_data_dir": tmp_path}
    )
    app = create_app(settings, settings.kafka_bootstrap_servers or "", load_rules())
    wait_at_most(app, settings.classifier_fetch_max_wait_seconds)
    # The consumer faust's worker starts, built by the same call it makes on start.
    consumer = app.consumer._thread._create_consumer(asyncio.get_running_loop())
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == 70 != FAUST_FIXED_WAIT_MS
    finally:
        await consumer.stop()
