"""Topic administration: create and verify every topic PlateletWatch uses, with explicit
partition counts (the classifier's internal topics are named by schemas.topics, so this module
knows no service).

Services verify at start and refuse to run against a topic whose partition count differs from the
configured one (co-partitioning by patient would silently break), naming each mismatch.
"""

import asyncio
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import Topic
from schemas.topics import PATIENT_STATE_TABLE, changelog_topic
from services.config import Settings

_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
_CREATED_VISIBLE_WITHIN_SECONDS = 10.0


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


class TopicMismatchError(RuntimeError):
    """Topics are missing or have the wrong partition count; the message lists each one."""


def required_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic of the pipeline, including the classifier's state changelog."""
    classifier_id = settings.group_id("classifier")
    specs = [TopicSpec(settings.topic(topic), settings.partitions) for topic in Topic]
    specs.append(
        TopicSpec(
            changelog_topic(classifier_id, PATIENT_STATE_TABLE),
            settings.partitions,
            {"cleanup.policy": "compact"},
        )
    )
    return specs


def describe_problems(specs: list[TopicSpec], actual_partitions: dict[str, int]) -> list[str]:
    """One readable line per topic that is missing or differs from its spec."""
    problems = []
    for spec in specs:
        actual = actual_partitions.get(spec.name)
        if actual is None:
            problems.append(f"{spec.name}: missing (expected {spec.partitions} partitions)")
        elif actual != spec.partitions:
            problems.append(f"{spec.name}: has {actual} partitions, expected {spec.partitions}")
    return problems


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    wanted = [name for name in names if name in existing]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}


async def _created_partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], created: list[str]
) -> dict[str, int]:
    """Partition counts once every topic just created is visible: on a cluster of several
    brokers, the one asked may learn of a new topic a moment after the controller made it."""
    deadline = asyncio.get_running_loop().time() + _CREATED_VISIBLE_WITHIN_SECONDS
    while True:
        counts = await _partition_counts(admin, names)
        if set(created) <= set(counts) or asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def ensure_topics(settings: Settings, bootstrap_servers: str, create: bool) -> list[str]:
    """Create missing topics when `create` is set, then verify all; return the names created.

    Raises TopicMismatchError naming every topic still missing or mis-partitioned; an existing
    topic is never altered, since changing partitions would reshuffle patients across workers.
    """
    specs = required_topics(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="plateletwatch-admin"
    )
    await admin.start()
    try:
        counts = await _partition_counts(admin, [spec.name for spec in specs])
        missing = [spec for spec in specs if spec.name not in counts]
        created = []
        if create and missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        settings.replication_factor,
                        topic_configs=spec.config,
                    )
                    for spec in missing
                ]
            )
            for name, error_code, *message in response.topic_errors:
                if error_code == 0:
                    created.append(name)
                elif error_code != _TOPIC_ALREADY_EXISTS:  # a concurrent creator is fine
                    raise TopicMismatchError(f"could not create {name}: {message} ({error_code})")
            counts = await _created_partition_counts(admin, [spec.name for spec in specs], created)
    finally:
        await admin.close()
    problems = describe_problems(specs, counts)
    if problems:
        raise TopicMismatchError(
            "Kafka topics do not match the configuration "
            f"(partitions={settings.partitions}):\n  "
            + "\n  ".join(problems)
            + "\nRun `plateletwatch topics` to create missing topics; a topic with the wrong "
            "partition count must be recreated or PLATELETWATCH_PARTITIONS set to match."
        )
    return created
