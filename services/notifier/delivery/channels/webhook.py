"""Webhook channel: POST the message as JSON. 2xx is delivered; 429/5xx/network errors are retried.

The JSON holds the whole alert (evidence, date of birth) for a receiver inside the hospital;
configured not to, it holds the summary, the action links and the ids only. With a secret
configured, each request is signed: `X-PlateletWatch-Signature: t=<unix time>,
v1=<hex HMAC-SHA256 of "<t>.<body>">`, so a receiver can tell a message from PlateletWatch from a
forgery and refuse an old one replayed.
"""

import hashlib
import hmac
import json
import time

from services.notifier.delivery.channels.http import HttpPoster
from services.notifier.domain.message import Message


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookChannel:
    name = "webhook"

    def __init__(
        self, timeout_seconds: float, secret: bytes | None = None, *, full_alert: bool = True
    ) -> None:
        self._http = HttpPoster("webhook", timeout_seconds)
        self._secret = secret
        self._full_alert = full_alert

    async def deliver(self, message: Message, address: str) -> str:
        content = message.body if self._full_alert else _summary_only(message)
        body = json.dumps(content).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.idempotency_key}
        if self._secret is not None:
            headers["X-PlateletWatch-Signature"] = signature(self._secret, int(time.time()), body)
        response = await self._http.post(address, content=body, headers=headers)
        return f"HTTP {response.status_code}"

    async def close(self) -> None:
        await self._http.close()


def _summary_only(message: Message) -> dict[str, object]:
    return {
        "summary": message.summary,
        "actions": message.actions,
        "alert_id": message.alert_id,
        "kind": message.kind.value,
        "withdraws_alert_id": message.withdraws_alert_id,
    }
