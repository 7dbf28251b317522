"""The on-call board in a real browser (Playwright driving Debian's Chromium), against the
console's routes on a loopback server with a real store and pager: sign in on a phone, read the
board, keep the scroll position while it refreshes itself and a new alert arrives, then open an
alert and acknowledge it with the keyboard alone. Screenshots go to artifacts/."""

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.delivery.escalator import Escalator
from services.notifier.store.repository import NotifierStore
from tests.test_alert_page_browser import (  # noqa: F401 - pytestmark: Chromium is needed
    ARTIFACTS,
    accessibility_problems,
    chromium,
    pytestmark,
)
from tests.test_console_http import PASSWORD, console_app
from tests.test_escalator import critical, escalator

ALERTS = 14  # more than a phone's screen holds


@pytest.fixture
async def board_url(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> AsyncIterator[tuple[str, Escalator]]:
    chain = escalator(store, webhook_receiver, [])
    app = console_app(store, chain, header=None, refresh_seconds=1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, offers no event
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", chain
    server.should_exit = True
    await serving


async def test_the_board_on_a_phone_keeps_its_place_and_acknowledges_by_keyboard(
    board_url: tuple[str, Escalator], store: NotifierStore
) -> None:
    url, chain = board_url
    now = datetime.now(UTC)
    for n in range(ALERTS):
        opened = now - timedelta(minutes=n)  # B13 has waited longest
        await chain.receive(critical(date(1950 + n, 1, 1), mrn=f"B{n:02d}"), opened)
    loop = asyncio.get_running_loop()

    def arrives() -> None:  # called from the browser's thread, while the board is open
        late = critical(mrn="LATE")
        asyncio.run_coroutine_threadsafe(chain.receive(late, datetime.now(UTC)), loop).result(10)

    ARTIFACTS.mkdir(exist_ok=True)
    seen = await asyncio.to_thread(_use_the_board, url, arrives)
    assert seen["rows_before"] == ALERTS
    assert "HOSP|B13" in seen["first_row"]  # the oldest unacknowledged first
    assert seen["rows_after"] == ALERTS + 1  # refreshed in place...
    assert seen["scroll_after"] == seen["scroll_before"] > 0  # ...without losing the place
    assert (
        seen["stale"] == "This board is not up to date: you have been signed out. Reload the page."
    )
    assert seen["rows_when_stale"] == ALERTS + 1  # the last board stays, marked as stale
    assert seen["focused"] == "Acknowledge"  # reached with Tab alone
    assert seen["accessibility"] == []  # sign-in, board, alert and audit pages, by axe-core
    assert "Acknowledged by dr.ada" in seen["after_ack"]
    assert re.search(r"acked\s+dr\.ada", seen["audit"])  # the audit trail shows who acted
    due = r"\d+ \w+ \d{4} \d\d:\d\d:\d\d [+-]\d\d:\d\d"  # in the local zone, with its offset
    assert re.search(rf"2\s+attending\s+{due}\s+cancelled", seen["audit"])  # stopped
    assert seen["chart_name"].startswith("Platelet counts over time")
    acknowledged = [e for e in await store.board(now - timedelta(hours=1)) if e.closure]
    assert len(acknowledged) == 1
    assert acknowledged[0].closure is not None
    assert acknowledged[0].closure.by == "dr.ada"
    assert "pending" not in {row.state for row in acknowledged[0].chain}  # the chain stopped
    assert acknowledged[0].chain[-1].state == "cancelled"


def _until(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the page did not change in time"
        time.sleep(0.1)


def _use_the_board(url: str, arrives: Any) -> dict[str, Any]:
    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            phone = browser.new_page(viewport={"width": 360, "height": 640})
            phone.goto(url + "/v1/console")
            problems = accessibility_problems(phone)  # the sign-in form
            phone.get_by_label("User name").fill("dr.ada")
            phone.get_by_label("Password").fill(PASSWORD)
            phone.get_by_role("button", name="Sign in").click()
            phone.wait_for_url(re.compile(r"/v1/console$"))
            rows = phone.locator("#board tbody tr")
            seen: dict[str, Any] = {"rows_before": rows.count(), "accessibility": problems}
            problems += accessibility_problems(phone)  # the board
            seen["first_row"] = rows.first.inner_text()
            phone.screenshot(path=str(ARTIFACTS / "board-phone.png"))  # the first screen
            phone.mouse.wheel(0, 500)
            _until(lambda: phone.evaluate("window.scrollY") > 0)
            seen["scroll_before"] = phone.evaluate("window.scrollY")
            arrives()
            _until(lambda: rows.count() > seen["rows_before"])  # the board's CSP forbids
            seen["rows_after"] = rows.count()  # Playwright's wait_for_function (eval)
            seen["scroll_after"] = phone.evaluate("window.scrollY")

            desktop = browser.new_page(viewport={"width": 1280, "height": 900})
            desktop.context.add_cookies(phone.context.cookies())
            desktop.goto(url + "/v1/console")
            desktop.screenshot(path=str(ARTIFACTS / "board-desktop.png"), full_page=True)
            desktop.context.clear_cookies()  # signed out, say the session expired
            warning = desktop.get_by_role("alert")
            _until(warning.is_visible)
            seen["stale"] = warning.inner_text()
            seen["rows_when_stale"] = desktop.locator("#board tbody tr").count()

            phone.goto(url + "/v1/console")
            phone.locator("#board tbody tr a").first.click()
            phone.wait_for_url(re.compile(r"/v1/console/alerts/"))
            seen["chart_name"] = phone.get_by_role("img").first.get_attribute("aria-label")
            problems += accessibility_problems(phone)  # the alert, with the console's forms
            for _ in range(20):  # Tab through the page to the Acknowledge button
                phone.keyboard.press("Tab")
                focused = phone.evaluate("document.activeElement.textContent")
                if focused == "Acknowledge":
                    break
            seen["focused"] = focused
            phone.keyboard.press("Enter")
            phone.wait_for_selector("p.closed")
            seen["after_ack"] = phone.inner_text("body")
            phone.screenshot(path=str(ARTIFACTS / "console-alert-phone.png"), full_page=True)
            phone.get_by_role("link", name="Audit trail").click()
            phone.wait_for_url(re.compile(r"/audit$"))
            seen["audit"] = phone.inner_text("body")
            problems += accessibility_problems(phone)
            phone.screenshot(path=str(ARTIFACTS / "audit-phone.png"), full_page=True)
        finally:
            browser.close()
    return seen
