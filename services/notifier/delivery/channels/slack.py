"""Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): the message's one line and
its action links as a message. The address is the incoming-webhook URL of the channel."""

from services.notifier.delivery.channels.http import HttpPoster
from services.notifier.domain.message import Message


class SlackChannel:
    name = "slack"

    def __init__(self, timeout_seconds: float) -> None:
        self._http = HttpPoster("Slack", timeout_seconds)

    async def deliver(self, message: Message, address: str) -> str:
        links = " · ".join(
            f"<{url}|{action.replace('_', ' ').capitalize()}>"
            for action, url in message.actions.items()
        )
        text = f"{message.line}\n{links}" if links else message.line
        response = await self._http.post(address, json={"text": text})
        return f"HTTP {response.status_code}"

    async def close(self) -> None:
        await self._http.close()
