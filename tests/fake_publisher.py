"""A loopback stand-in for EventPublisher: keeps what it is given, and can play a broker that
is down or that refuses records above a size, as Kafka's max_request_size does (events and
dead letters may be given different limits, to refuse a result but not the letter about it)."""

from dataclasses import dataclass, field

from aiokafka.errors import KafkaConnectionError
from pydantic import BaseModel

from services.kafka.producer import EventTooLargeError


@dataclass(frozen=True)
class Record:
    topic: str
    key: str | None
    event: BaseModel
    headers: dict[str, str]


@dataclass
class FakePublisher:
    largest_record: int = 1_048_576
    largest_dead_letter: int = 1_048_576
    down: bool = False
    records: list[Record] = field(default_factory=list)

    @property
    def broker_reachable(self) -> bool:
        return not self.down

    async def publish(
        self, topic: str, key: str | None, event: BaseModel, headers: dict[str, str] | None = None
    ) -> None:
        if self.down:
            raise KafkaConnectionError("the broker is down (fake)")
        size = len(event.model_dump_json().encode())
        letter = topic.endswith("ingest.deadletter.v1")
        if size > (self.largest_dead_letter if letter else self.largest_record):
            raise EventTooLargeError(size)
        self.records.append(Record(topic, key, event, headers or {}))

    def on(self, topic_suffix: str) -> list[Record]:
        return [r for r in self.records if r.topic.endswith(topic_suffix)]
