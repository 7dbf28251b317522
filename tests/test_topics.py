"""Topics are created explicitly with matching partition counts; a mismatch is a clear error."""

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import Topic
from services.config import Settings
from services.kafka.admin import (
    TopicMismatchError,
    TopicSpec,
    describe_problems,
    ensure_topics,
    required_topics,
)
from tests.conftest import run_cli, settings_env


def test_required_topics_cover_the_contract_and_the_classifier_changelog() -> None:
    settings = Settings(topic_prefix="x.", partitions=4)
    specs = {spec.name: spec for spec in required_topics(settings)}
    for topic in Topic:
        assert specs[f"x.{topic.value}"].partitions == 4
    changelog = specs["x.plateletwatch-classifier-patient-state-changelog"]
    assert changelog.partitions == 4
    assert changelog.config == {"cleanup.policy": "compact"}
    assert len(specs) == len(Topic) + 1  # no faust assignor topic: the classifier has no faust


def test_problems_name_each_missing_or_mispartitioned_topic() -> None:
    specs = [TopicSpec("a", 6), TopicSpec("b", 6), TopicSpec("c", 6)]
    assert describe_problems(specs, {"a": 6, "b": 3}) == [
        "b: has 3 partitions, expected 6",
        "c: missing (expected 6 partitions)",
    ]


@pytest.mark.integration
async def test_ensure_creates_once_then_only_verifies(settings: Settings) -> None:
    servers = settings.kafka_bootstrap_servers or ""
    with pytest.raises(TopicMismatchError, match="missing"):
        await ensure_topics(settings, servers, create=False)
    created = await ensure_topics(settings, servers, create=True)
    assert sorted(created) == sorted(spec.name for spec in required_topics(settings))
    assert await ensure_topics(settings, servers, create=True) == []
    assert await ensure_topics(settings, servers, create=False) == []


@pytest.mark.integration
async def test_a_partition_mismatch_is_named_at_start(settings: Settings) -> None:
    servers = settings.kafka_bootstrap_servers or ""
    wrong = settings.topic(Topic.LAB_RESULTS)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(wrong, settings.partitions + 2, 1)])
    await admin.close()
    with pytest.raises(TopicMismatchError) as raised:
        await ensure_topics(settings, servers, create=True)
    message = str(raised.value)
    assert f"{wrong}: has {settings.partitions + 2} partitions, expected {settings.partitions}" in (
        message
    )
    assert "plateletwatch topics" in message


@pytest.mark.integration
def test_cli_topics_then_a_service_refuses_mismatched_topics(settings: Settings) -> None:
    env = settings_env(settings)
    created = run_cli("topics", env=env)
    assert created.returncode == 0, created.stderr
    assert f"created {settings.topic(Topic.LAB_RESULTS)}" in created.stdout
    env["PLATELETWATCH_PARTITIONS"] = str(settings.partitions + 1)
    refused = run_cli("ingest", env=env)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert f"has {settings.partitions} partitions, expected {settings.partitions + 1}" in (
        refused.stderr
    )


def test_a_service_without_a_broker_says_so(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    refused = run_cli("classifier", env=env)
    assert refused.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in refused.stderr
