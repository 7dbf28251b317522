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
