"""Webhook channel: POST the page as JSON. 2xx is delivered; 429/5xx/network errors are retried."""

import httpx

from services.notifier.channels.base import DeliveryError
from services.notifier.message import Page


class WebhookChannel:
    name = "webhook"

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds

    async def deliver(self, page: Page, address: str) -> str:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(
                    address,
                    json=page.body,
                    headers={"Idempotency-Key": page.idempotency_key},
                )
        except httpx.HTTPError as error:
            raise DeliveryError(
                f"webhook unreachable: {type(error).__name__}", retryable=True
            ) from error
        if response.is_success:
            return f"HTTP {response.status_code}"
        retryable = response.status_code == 429 or response.status_code >= 500
        raise DeliveryError(f"webhook answered HTTP {response.status_code}", retryable=retryable)
