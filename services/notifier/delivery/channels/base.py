"""The contract every notification channel fulfils, and the one channels with incidents of their
own (PagerDuty) add."""

from typing import Protocol, runtime_checkable

from schemas import AckAction
from services.notifier.domain.message import Message


class DeliveryError(Exception):
    """A message did not get through. `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    """Sends one message to one address; raises DeliveryError on failure, returns a short
    receipt."""

    name: str

    async def deliver(self, message: Message, address: str) -> str: ...


@runtime_checkable
class FollowsUp(Protocol):
    """A channel whose message lives on at the receiving end (an incident): it is told when the
    alert is acknowledged or resolved in PlateletWatch."""

    async def follow_up(self, alert_id: str, address: str, action: AckAction) -> str: ...


@runtime_checkable
class HoldsConnections(Protocol):
    """A channel that keeps connections open between messages (the HTTP ones): closed when the
    notifier stops."""

    async def close(self) -> None: ...
