"""The one clock the escalator and the delivery read `now` from, injected so a test can set the
time; the notifier runs on the wall clock in UTC."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
