"""The contract every notification channel fulfils (webhook now; e-mail, SMS, PagerDuty later)."""

from typing import Protocol

from services.notifier.message import Page


class DeliveryError(Exception):
    """A page did not get through. `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    """Sends one page to one address; raises DeliveryError on failure, returns a short receipt."""

    name: str

    async def deliver(self, page: Page, address: str) -> str: ...
