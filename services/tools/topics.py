"""`plateletwatch topics`: create the missing topics and verify every partition count."""

import asyncio

from services.config import Settings
from services.kafka.admin import ensure_topics


def create_topics(settings: Settings, bootstrap_servers: str) -> int:
    """Print each topic created, then that all are present.

    Raises TopicMismatchError naming every topic still missing or mis-partitioned.
    """
    created = asyncio.run(ensure_topics(settings, bootstrap_servers, create=True))
    for name in created:
        print(f"created {name}")
    print(f"all topics present with {settings.partitions} partitions")
    return 0
