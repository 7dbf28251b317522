"""The alert page in a real browser (Playwright driving Debian's Chromium): a hematologist opens the
link from a page on a phone, sees the trend chart, presses Acknowledge, and the escalation stops.
Screenshots at phone and desktop widths go to artifacts/ (ignored by git) for a reviewer."""

import asyncio
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from pydantic import SecretStr

from schemas import AckAction
from services.config import Settings
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.domain.links import sign_link
from services.notifier.store.repository import NotifierStore
from tests.conftest import AUTH, REPO, wait_for, with_paging

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="Chromium is not installed (Debian package 'chromium'; make test installs it "
        "where apt-get runs as root)",
    ),
]

ARTIFACTS = REPO / "artifacts"
WINDOW_SECONDS = 15  # to acknowledge before the secondary is paged
HOUR = timedelta(hours=1)


@pytest.fixture
def console(topics: Settings, webhook_receiver, start_service, tmp_path: Path) -> Settings:
    settings = with_paging(topics, tmp_path, WINDOW_SECONDS, webhook_receiver.url)
    host = settings.bind_host
    for name in ("ingest", "classifier", "notifier"):
        port = getattr(settings, f"{name}_port")
        start_service(name, settings).wait_ready(f"http://{host}:{port}/readyz")
    return settings


def _results(example: bytes) -> list[bytes]:
    """A fall over three days into a critical count: the trend the page should draw."""
    body = json.loads(example)
    falling = []
    for n, (value, day) in enumerate(((140, 22), (60, 23), (35, 24), (12, 25))):
        one = dict(body, value=str(value), result_id=f"LAB-TREND-{n}")
        one["collected_at"] = f"2026-11-{day}T07:40:00+01:00"
        one["verified_at"] = f"2026-11-{day}T08:05:00+01:00"
        falling.append(json.dumps(one).encode())
    return falling


async def test_a_hematologist_acknowledges_from_a_phone_and_the_escalation_stops(
    console: Settings, webhook_receiver: WebhookReceiver, example_result: bytes
) -> None:
    import httpx

    async with httpx.AsyncClient(headers=AUTH) as client:
        url = f"http://{console.bind_host}:{console.ingest_port}/v1/lab-results"
        for body in _results(example_result):
            assert (await client.post(url, content=body)).status_code == 202
    await wait_for(lambda: len(webhook_receiver.pages) >= 1, 60, "the primary's page")
    (page,) = webhook_receiver.pages
    link = page.body["actions"]["acknowledge"]

    ARTIFACTS.mkdir(exist_ok=True)
    secret = (console.notifier_link_secret or SecretStr("")).get_secret_value().encode()
    yesterday = datetime.now(UTC) - timedelta(days=1)
    expired = (
        link.rsplit("/", 1)[0]
        + "/"
        + sign_link(
            secret, page.body["alert"]["alert_id"], AckAction.ACKNOWLEDGE, "x", yesterday, HOUR
        )
    )
    shown = await asyncio.to_thread(_acknowledge_in_the_browser, link, expired)
    assert shown["points"] == 4  # 140, 60, 35 then the critical 12
    assert shown["accessibility"] == []  # the alert page and the refusal page, by axe-core
    assert "Acknowledged: the escalation has stopped." in shown["after"]
    assert shown["refused"].startswith("This link cannot be used: the link is not genuine")
    assert shown["expired"].startswith("This link cannot be used: the link has expired")
    assert shown["expired_points"] == 0  # a refusal page, never the alert

    store = NotifierStore(console.notifier_database_url)
    await store.start()
    try:
        alert_id = page.body["alert"]["alert_id"]
        states = [row.state for row in await store.escalation(alert_id)]
        assert states[0] == "paged"
        assert set(states[1:]) == {"cancelled"}  # the secondary and the fallback never fire
    finally:
        await store.stop()
    await asyncio.sleep(WINDOW_SECONDS + 2)
    assert [p.path.rsplit("/", 1)[-1] for p in webhook_receiver.pages] == ["primary"]


def accessibility_problems(page: Page) -> list[str]:
    """What axe-core (the checker behind most accessibility audits) finds wrong with the page
    as shown: missing names and labels, contrast, landmarks, ARIA misuse."""
    found = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in found]


def chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, as the container it runs in allows."""
    return playwright.chromium.launch(
        executable_path=shutil.which("chromium"),
        headless=True,
        args=["--no-sandbox", "--disable-background-networking"],
    )


def _acknowledge_in_the_browser(link: str, expired: str) -> dict[str, object]:
    """In its own thread: Playwright's sync API runs its own event loop."""
    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            phone = browser.new_page(viewport={"width": 360, "height": 740})
            phone.goto(link)
            points = phone.locator("svg circle.point").count()
            problems = accessibility_problems(phone)
            phone.screenshot(path=str(ARTIFACTS / "alert-page-phone.png"), full_page=True)
            desktop = browser.new_page(viewport={"width": 1280, "height": 900})
            desktop.goto(link)
            desktop.screenshot(path=str(ARTIFACTS / "alert-page-desktop.png"), full_page=True)
            phone.get_by_role("button", name="Acknowledge").click()
            phone.wait_for_load_state()
            after = phone.inner_text("body")
            tampered = re.sub(r".{4}$", "AAAA" if not link.endswith("AAAA") else "BBBB", link)
            desktop.goto(tampered)
            refused = desktop.inner_text("p")
            problems += accessibility_problems(desktop)
            desktop.goto(expired)
            too_late = desktop.inner_text("p")
            too_late_points = desktop.locator("svg circle").count()
        finally:
            browser.close()
    return {
        "points": points,
        "after": after,
        "refused": refused,
        "expired": too_late,
        "expired_points": too_late_points,
        "accessibility": problems,
    }
