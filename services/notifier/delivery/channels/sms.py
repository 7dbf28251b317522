"""SMS or pager gateway over HTTP: POST {"to": number, "message": text} to the configured
gateway, with a bearer token if one is set. The message is the message's summary (what happened,
the patient id, the acknowledge link); the address is the phone or pager number."""

from services.notifier.delivery.channels.http import HttpPoster
from services.notifier.domain.message import Message


class SmsChannel:
    name = "sms"

    def __init__(self, gateway_url: str, timeout_seconds: float, token: str | None = None) -> None:
        self._url = gateway_url
        self._http = HttpPoster("SMS gateway", timeout_seconds)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def deliver(self, message: Message, address: str) -> str:
        body = {"to": address, "message": message.summary}
        response = await self._http.post(self._url, json=body, headers=self._headers)
        return f"HTTP {response.status_code}"

    async def close(self) -> None:
        await self._http.close()
