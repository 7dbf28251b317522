"""From a lab result posted to ingest to an e-mail received by a real SMTP server: the primary is
paged, nobody answers, the secondary is paged, the secondary acknowledges through the e-mail's
signed link, and the chain stops. And a notifier killed with SIGKILL mid-chain: restarted, it
pages the rest of the chain once each. Escalation windows are seconds here, minutes in a
hospital."""

import asyncio
import json
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from schemas import DeliveryEvent, Topic
from services.config import Settings
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from tests.conftest import (
    AUTH,
    SmtpReceiver,
    read_all,
    wait_for,
    with_paging,
)

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 3


@pytest.fixture
def paging(
    topics: Settings, smtp_receiver: SmtpReceiver, start_service, tmp_path: Path
) -> Settings:
    settings = with_paging(topics, tmp_path, WINDOW_SECONDS).model_copy(
        update={"notifier_smtp_host": "127.0.0.1", "notifier_smtp_port": smtp_receiver.port}
    )
    host = settings.bind_host
    for name, port in (
        ("ingest", settings.ingest_port),
        ("classifier", settings.classifier_port),
        ("notifier", settings.notifier_port),
    ):
        start_service(name, settings).wait_ready(f"http://{host}:{port}/readyz")
    return settings


def _mailed_to(message: EmailMessage) -> str:
    return str(message["To"]).split("@")[0]


def _mailed(smtp: SmtpReceiver) -> list[str]:
    return [_mailed_to(message) for message in smtp.messages]


async def test_a_critical_result_is_mailed_escalated_and_acknowledged_by_link(
    paging: Settings, smtp_receiver: SmtpReceiver, example_result: bytes
) -> None:
    ingest = f"http://{paging.bind_host}:{paging.ingest_port}"
    async with httpx.AsyncClient(base_url=ingest, headers=AUTH) as client:
        accepted = await client.post("/v1/lab-results", content=example_result)
        assert accepted.status_code == 202, accepted.text

    await wait_for(lambda: _mailed(smtp_receiver) == ["primary"], 60, "the primary's e-mail")
    await wait_for(lambda: len(smtp_receiver.messages) >= 2, 3 * WINDOW_SECONDS, "escalation")
    assert _mailed(smtp_receiver) == ["primary", "secondary"]

    text = smtp_receiver.messages[1].get_content()
    assert "CRITICAL LOW platelets: 12 x10^9/L" in text
    (ack,) = re.findall(r"^Acknowledge: (\S+)", text, flags=re.MULTILINE)
    async with httpx.AsyncClient() as client:
        forged = await client.post(ack[:-6] + ("A" * 6 if not ack.endswith("A" * 6) else "B" * 6))
        assert (forged.status_code, forged.json()["error"]) == (403, "the link is not genuine")
        # As a browser does: open the link, then press its button.
        opened = await client.get(ack)
        assert "Acknowledge</button>" in opened.text
        assert '<svg role="img"' in opened.text
        acked = await client.post(ack, headers={"Accept": "text/html"})
    assert acked.status_code == 200, acked.text
    assert "Acknowledged: the escalation has stopped." in acked.text

    await asyncio.sleep(2 * WINDOW_SECONDS)  # past the attending's window: nothing may follow
    assert _mailed(smtp_receiver) == ["primary", "secondary"], "paged after the acknowledgement"

    # The lab corrects the result: the alert is withdrawn and everyone paged is told.
    correction = json.loads(example_result) | {"value": "140", "status": "corrected"}
    async with httpx.AsyncClient(base_url=ingest, headers=AUTH) as client:
        corrected = await client.post("/v1/lab-results", json=correction)
        assert corrected.status_code == 202, corrected.text
    await wait_for(lambda: len(smtp_receiver.messages) >= 4, 60, "the withdrawal e-mails")
    withdrawals = smtp_receiver.messages[2:]
    assert sorted(_mailed_to(m) for m in withdrawals) == ["primary", "secondary"]
    for message in withdrawals:
        assert str(message["Subject"]).startswith("WITHDRAWN: the CRITICAL LOW platelets page")
        assert "corrected to 140 x10^9/L" in message.get_content()

    events = [
        DeliveryEvent.model_validate_json(m.value)
        for m in await read_all(
            paging.kafka_bootstrap_servers or "", paging.topic(Topic.NOTIFIER_DELIVERIES)
        )
    ]
    steps = [(e.step.value, e.recipient) for e in events if e.step.value != "sent"]
    assert steps[:4] == [  # the example patient is a child: paediatric hematology is paged
        ("delivered", "paediatric/primary"),
        ("escalated", "paediatric/secondary"),
        ("delivered", "paediatric/secondary"),
        ("acked", "paediatric/secondary"),
    ]
    assert steps[4] == ("withdrawn", "classifier")  # on the alert's own timeline, with why
    assert steps[5:] == [("withdrawn", "paged earlier")] * 2


async def test_a_notifier_killed_mid_chain_pages_the_rest_once_after_restart(
    topics: Settings,
    webhook_receiver: WebhookReceiver,
    start_service,
    tmp_path: Path,
    example_result: bytes,
) -> None:
    settings = with_paging(topics, tmp_path, WINDOW_SECONDS, webhook_receiver.url)
    host = settings.bind_host
    ready = f"http://{host}:{settings.notifier_port}/readyz"
    for name, port in (("ingest", settings.ingest_port), ("classifier", settings.classifier_port)):
        start_service(name, settings).wait_ready(f"http://{host}:{port}/readyz")
    first = start_service("notifier", settings)
    first.wait_ready(ready)
    async with httpx.AsyncClient(headers=AUTH) as client:
        url = f"http://{host}:{settings.ingest_port}/v1/lab-results"
        assert (await client.post(url, content=example_result)).status_code == 202

    def pages() -> list[str]:
        return [page.path.rsplit("/", 1)[-1] for page in webhook_receiver.pages]

    await wait_for(lambda: pages() == ["primary"], 60, "the primary's page")
    first.process.kill()  # SIGKILL: nothing flushed, nothing committed on the way out
    first.process.wait()
    await asyncio.sleep(WINDOW_SECONDS + 1)  # the secondary falls due while nobody runs

    start_service("notifier", settings).wait_ready(ready)
    everyone = ["primary", "secondary", "attending", "supervisor"]
    await wait_for(lambda: len(pages()) >= 4, 4 * WINDOW_SECONDS + 30, "the rest of the chain")
    await asyncio.sleep(WINDOW_SECONDS)  # and nothing after it
    assert pages() == everyone
