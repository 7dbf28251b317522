"""E-mail channel: the message's one line and its action links, over SMTP (aiosmtplib).

An e-mail leaves the hospital's systems more easily than a pager message, so it carries the
summary (patient id, kind, value, collection time) and the links, never the alert's full
evidence. A refused recipient or a 5xx answer is final; an unreachable server, a timeout or a
4xx answer is worth retrying.
"""

from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from services.notifier.delivery.channels.base import DeliveryError
from services.notifier.domain.message import Message


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    use_tls: bool = False  # TLS from the first byte (port 465)
    start_tls: bool = False  # STARTTLS after connecting (port 587)
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 10.0


class EmailChannel:
    name = "email"

    def __init__(self, smtp: SmtpSettings) -> None:
        self._smtp = smtp

    async def deliver(self, message: Message, address: str) -> str:
        smtp = self._smtp
        try:
            _, answer = await aiosmtplib.send(
                _email(message, smtp.sender, address),
                hostname=smtp.host,
                port=smtp.port,
                use_tls=smtp.use_tls,
                start_tls=smtp.start_tls,
                username=smtp.username,
                password=smtp.password,
                timeout=smtp.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            raise DeliveryError("the mail server refused the recipient", retryable=False) from error
        except aiosmtplib.SMTPResponseException as error:
            raise DeliveryError(
                f"the mail server answered {error.code}", retryable=error.code < 500
            ) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise DeliveryError(
                f"mail server unreachable: {type(error).__name__}", retryable=True
            ) from error
        return f"SMTP {answer}".strip()


def _email(message: Message, sender: str, recipient: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = recipient
    email["Subject"] = message.line
    email["X-PlateletWatch-Alert"] = message.alert_id
    lines = [message.line, ""]
    lines += [
        f"{action.replace('_', ' ').capitalize()}: {url}" for action, url in message.actions.items()
    ]
    email.set_content("\n".join(lines) + "\n")
    return email
