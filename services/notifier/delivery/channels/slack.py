"""Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): the page's one line and
its action links as a message. The address is the incoming-webhook URL of the channel."""

from services.notifier.delivery.channels.http import post
from services.notifier.domain.message import Page


class SlackChannel:
    name = "slack"

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds

    async def deliver(self, page: Page, address: str) -> str:
        links = " · ".join(
            f"<{url}|{action.replace('_', ' ').capitalize()}>"
            for action, url in page.actions.items()
        )
        text = f"{page.line}\n{links}" if links else page.line
        response = await post(address, "Slack", self._timeout, json={"text": text})
        return f"HTTP {response.status_code}"
