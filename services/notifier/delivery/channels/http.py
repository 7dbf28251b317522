"""One HTTP POST for the channels that speak HTTP (webhook, Slack, SMS gateway, PagerDuty), with
one reading of the answer: 2xx delivered; 429, 5xx and network errors worth retrying; any other
answer final."""

from typing import Any

import httpx

from services.notifier.delivery.channels.base import DeliveryError


async def post(
    url: str,
    service: str,
    timeout_seconds: float,
    *,
    content: bytes | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds) as client:
            response = await client.post(url, content=content, json=json, headers=headers)
    except httpx.HTTPError as error:
        raise DeliveryError(
            f"{service} unreachable: {type(error).__name__}", retryable=True
        ) from error
    if response.is_success:
        return response
    retryable = response.status_code == 429 or response.status_code >= 500
    raise DeliveryError(f"{service} answered HTTP {response.status_code}", retryable=retryable)
