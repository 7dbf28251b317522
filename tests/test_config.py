"""Configuration: defaults, a TOML file, environment variables on top, clear errors."""

from pathlib import Path

import pytest

from schemas import Topic
from services.config import Settings
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "PLATELETWATCH_CONFIG_FILE",
        "PLATELETWATCH_PARTITIONS",
        "PLATELETWATCH_LOCAL_TIMEZONE",
        "PLATELETWATCH_INGEST_LOCAL_TIMEZONE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_file_values_apply_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "plateletwatch.toml"
    config.write_text('partitions = 12\ntopic_prefix = "prod."\ningest_port = 9000\n')
    monkeypatch.setenv("PLATELETWATCH_CONFIG_FILE", str(config))
    monkeypatch.setenv("PLATELETWATCH_INGEST_PORT", "9100")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = Settings()
    assert settings.partitions == 12
    assert settings.ingest_port == 9100
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.topic(Topic.LAB_RESULTS) == "prod.lab.results.v1"
    assert settings.group_id("classifier") == "prod.plateletwatch-classifier"


def test_a_named_config_file_that_does_not_exist_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PLATELETWATCH_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        Settings()


def test_an_invalid_setting_is_reported_without_a_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PLATELETWATCH_PARTITIONS": "0"}
    result = run_cli("topics", env=env)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_local_time_zone_serves_the_whole_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingest reads times without an offset in it, the notifier shows every time in it."""
    assert Settings().local_timezone == "UTC"
    monkeypatch.setenv("PLATELETWATCH_LOCAL_TIMEZONE", "Europe/Paris")
    assert Settings().local_timezone == "Europe/Paris"
    assert Settings().local_zone.key == "Europe/Paris"
    assert Settings(local_timezone="Asia/Tokyo").local_timezone == "Asia/Tokyo"


def test_the_old_ingest_only_zone_setting_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLATELETWATCH_INGEST_LOCAL_TIMEZONE", "Europe/Berlin")
    assert Settings().local_timezone == "Europe/Berlin"
    monkeypatch.setenv("PLATELETWATCH_LOCAL_TIMEZONE", "Europe/Paris")  # the new name wins
    assert Settings().local_timezone == "Europe/Paris"
    monkeypatch.delenv("PLATELETWATCH_LOCAL_TIMEZONE")
    monkeypatch.delenv("PLATELETWATCH_INGEST_LOCAL_TIMEZONE")
    config = tmp_path / "plateletwatch.toml"
    config.write_text('ingest_local_timezone = "Europe/Rome"\n')
    monkeypatch.setenv("PLATELETWATCH_CONFIG_FILE", str(config))
    assert Settings().local_timezone == "Europe/Rome"
    config.write_text('local_timezone = "Europe/Madrid"\n')
    assert Settings().local_timezone == "Europe/Madrid"


def test_an_unknown_zone_is_refused_when_the_settings_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLATELETWATCH_LOCAL_TIMEZONE", "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="unknown time zone"):
        Settings()
