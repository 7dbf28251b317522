"""The notifier's one clock: the escalator, the delivery and the web routes read `now` from it,
injected so a test can set the time; the notifier runs on the wall clock in UTC."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
