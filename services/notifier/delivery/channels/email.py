"""E-mail channel: the page's one line and its action links, over SMTP (aiosmtplib).

An e-mail leaves the hospital's systems more easily than a pager message, so it carries the
summary (patient id, kind, value, collection time) and the links, never the alert's full
evidence. A refused recipient or a 5xx answer is final; an unreachable server, a timeout or a
4xx answer is worth retrying.
"""

from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from services.notifier.delivery.channels.base import DeliveryError
from services.notifier.domain.message import Page


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

    async def deliver(self, page: Page, address: str) -> str:
        smtp = self._smtp
        try:
            _, answer = await aiosmtplib.send(
                _message(page, smtp.sender, address),
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


def _message(page: Page, sender: str, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = page.line
    message["X-PlateletWatch-Alert"] = page.alert_id
    lines = [page.line, ""]
    lines += [
        f"{action.replace('_', ' ').capitalize()}: {url}" for action, url in page.actions.items()
    ]
    message.set_content("\n".join(lines) + "\n")
    return message
