"""PagerDuty Events API v2: a message triggers an incident whose dedup_key is the alert id, so a
resend never opens a second one; an acknowledgement in PlateletWatch acknowledges it, and a
withdrawn alert resolves it. The address is the PagerDuty service's integration (routing) key.
The incident's summary is the message's one line; no evidence leaves for the cloud.
"""

from typing import Any

from schemas import AckAction, AlertKind
from services.notifier.delivery.channels.http import HttpPoster
from services.notifier.domain.message import Message

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class PagerDutyChannel:
    name = "pagerduty"

    def __init__(self, timeout_seconds: float, events_url: str = EVENTS_URL) -> None:
        self._http = HttpPoster("PagerDuty", timeout_seconds)
        self._url = events_url

    async def deliver(self, message: Message, address: str) -> str:
        if message.kind is AlertKind.WITHDRAWN:
            return await self._send(address, "resolve", message.withdraws_alert_id or "")
        event: dict[str, Any] = {
            "payload": {
                "summary": message.line[:1024],
                "source": "plateletwatch",
                "severity": "critical" if message.kind is AlertKind.CRITICAL_LOW else "warning",
                "component": message.kind.value,
            },
            "links": [
                {"href": url, "text": action.replace("_", " ").capitalize()}
                for action, url in message.actions.items()
            ],
        }
        return await self._send(address, "trigger", message.alert_id, event)

    async def follow_up(self, alert_id: str, address: str, action: AckAction) -> str:
        """Mirror an acknowledge or resolve taken in PlateletWatch on the incident."""
        event_action = "resolve" if action is AckAction.RESOLVE else "acknowledge"
        return await self._send(address, event_action, alert_id)

    async def _send(
        self, routing_key: str, action: str, dedup_key: str, extra: dict[str, Any] | None = None
    ) -> str:
        event = {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key}
        response = await self._http.post(self._url, json=event | (extra or {}))
        return f"PagerDuty {action}: {response.json().get('message', 'accepted')}"

    async def close(self) -> None:
        await self._http.close()
