"""Every channel the notifier can page through, by the name a roster uses, in one place.

A factory builds its channel from the settings, or returns None when its server is not
configured (e-mail, SMS): that channel is then absent, and a roster entry naming it fails
delivery with "no <name> channel is configured". Adding a channel is one module and one line.
"""

from collections.abc import Callable

from pydantic import SecretStr

from services.config import Settings
from services.notifier.delivery.channels.base import Channel
from services.notifier.delivery.channels.email import EmailChannel, SmtpSettings
from services.notifier.delivery.channels.pagerduty import PagerDutyChannel
from services.notifier.delivery.channels.slack import SlackChannel
from services.notifier.delivery.channels.sms import SmsChannel
from services.notifier.delivery.channels.webhook import WebhookChannel

ChannelFactory = Callable[[Settings], Channel | None]


def _webhook(settings: Settings) -> Channel:
    signing = _revealed(settings.notifier_webhook_secret)
    return WebhookChannel(
        settings.notifier_webhook_timeout_seconds,
        signing.encode() if signing else None,
        full_alert=settings.notifier_webhook_full_alert,
    )


def _pagerduty(settings: Settings) -> Channel:
    return PagerDutyChannel(
        settings.notifier_webhook_timeout_seconds, settings.notifier_pagerduty_events_url
    )


def _slack(settings: Settings) -> Channel:
    return SlackChannel(settings.notifier_webhook_timeout_seconds)


def _sms(settings: Settings) -> Channel | None:
    if settings.notifier_sms_gateway_url is None:
        return None
    return SmsChannel(
        settings.notifier_sms_gateway_url,
        settings.notifier_webhook_timeout_seconds,
        _revealed(settings.notifier_sms_gateway_token),
    )


def _email(settings: Settings) -> Channel | None:
    if settings.notifier_smtp_host is None:
        return None
    smtp = SmtpSettings(
        host=settings.notifier_smtp_host,
        port=settings.notifier_smtp_port,
        sender=settings.notifier_smtp_sender,
        use_tls=settings.notifier_smtp_security == "tls",
        start_tls=settings.notifier_smtp_security == "starttls",
        username=settings.notifier_smtp_username,
        password=_revealed(settings.notifier_smtp_password),
    )
    return EmailChannel(smtp)


CHANNELS: dict[str, ChannelFactory] = {
    "webhook": _webhook,
    "pagerduty": _pagerduty,
    "slack": _slack,
    "sms": _sms,
    "email": _email,
}


def channels_from(settings: Settings) -> dict[str, Channel]:
    """Webhook, PagerDuty and Slack always; e-mail and SMS when their servers are configured."""
    built = {name: factory(settings) for name, factory in CHANNELS.items()}
    return {name: channel for name, channel in built.items() if channel is not None}


def _revealed(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
