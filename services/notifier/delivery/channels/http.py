"""One HTTP POST for the channels that speak HTTP (webhook, Slack, SMS gateway, PagerDuty), with
one reading of the answer: 2xx delivered; 429, 5xx and network errors worth retrying; any other
answer final."""

from typing import Any

import httpx

from services.notifier.delivery.channels.base import DeliveryError


class HttpPoster:
    """One httpx client per channel, reused for every message: a new client builds a new SSL
    context, about 20 ms of CPU a page. Made on first use, in the running event loop; `close`
    ends its connections (the notifier's shutdown), and a later POST makes a new one."""

    def __init__(self, service: str, timeout_seconds: float) -> None:
        self._service = service
        self._timeout = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    async def post(
        self,
        url: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The 2xx answer; raises DeliveryError (retryable or not) for any other outcome."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await self._client.post(url, content=content, json=json, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryError(
                f"{self._service} unreachable: {type(error).__name__}", retryable=True
            ) from error
        if response.is_success:
            return response
        retryable = response.status_code == 429 or response.status_code >= 500
        raise DeliveryError(
            f"{self._service} answered HTTP {response.status_code}", retryable=retryable
        )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
