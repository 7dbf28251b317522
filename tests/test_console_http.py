"""The console's routes over HTTP against a real store (SQLite and PostgreSQL) and a real
loopback pager: sign-in, the board by service, CSRF on every action, the trusted proxy header,
and the audit trail."""

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.delivery.escalator import Escalator
from services.notifier.store.repository import NotifierStore
from services.notifier.web.auth import ConsoleUser, hash_password
from services.notifier.web.routes import clock, console_router
from tests.alert_factory import persistent_severe, refractory
from tests.conftest import unlabelled
from tests.test_escalator import critical, escalator, paged, two_services

PASSWORD = "a long enough passphrase"
SESSION_SECRET = b"test-session-secret"
USERS = {
    "dr.ada": ConsoleUser(
        name="dr.ada", services=("adult",), password_hash=hash_password(PASSWORD, 1000)
    ),
    "dr.kid": ConsoleUser(name="dr.kid", services=("paediatric",)),
}


def console(store: NotifierStore, chain: Escalator, header: str | None = None) -> httpx.AsyncClient:
    app = console_app(store, chain, header)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://console.test")


def console_app(
    store: NotifierStore, chain: Escalator, header: str | None, refresh_seconds: float = 30
) -> FastAPI:
    """The console's routes as the notifier serves them, for the USERS above."""
    app = FastAPI()
    app.include_router(
        console_router(
            store,
            chain,
            USERS,
            SESSION_SECRET,
            proxy_user_header=header,
            session_lifetime=timedelta(hours=1),
            refresh_seconds=refresh_seconds,
            secure_cookies=False,
            zone=UTC,
        )
    )
    return app


async def sign_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await client.get("/v1/console/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token is not None
    data = {"login_token": token.group(1), "user": user, "password": password}
    return await client.post("/v1/console/login", data=data)


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def test_the_board_needs_a_sign_in_and_a_wrong_password_is_refused(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    async with console(store, escalator(store, webhook_receiver, [])) as client:
        assert (await client.get("/v1/console")).headers["location"] == "/v1/console/login"
        refused = await sign_in(client, "dr.ada", "guess")
        assert refused.status_code == 401
        assert "Wrong user name or password" in refused.text
        proxy_only = await sign_in(client, "dr.kid", "")  # no password hash: proxy sign-in only
        assert proxy_only.status_code == 401
        stale = await client.post(
            "/v1/console/login", data={"login_token": "x", "user": "dr.ada", "password": PASSWORD}
        )
        assert stale.status_code == 400
        assert (await client.get("/v1/console")).status_code == 303
        signed = await sign_in(client, "dr.ada", PASSWORD)
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/v1/console" in cookie
        board = await client.get("/v1/console")
        assert board.status_code == 200
        assert "Signed in as dr.ada" in board.text
        policy = board.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        signed_out = await client.post("/v1/console/logout", data={"csrf_token": csrf(board.text)})
        assert signed_out.status_code == 303
        assert (await client.get("/v1/console")).status_code == 303


async def test_the_console_reads_the_time_from_the_injected_clock(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    """A session of an hour is refused once the clock the routes read says an hour has passed."""
    app = console_app(store, escalator(store, webhook_receiver, []), None)
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://console.test"
    ) as client:
        await sign_in(client, "dr.ada", PASSWORD)
        assert (await client.get("/v1/console")).status_code == 200
        app.dependency_overrides[clock] = lambda: later
        assert (await client.get("/v1/console")).headers["location"] == "/v1/console/login"


async def test_acknowledging_from_the_console_needs_the_csrf_token_and_stops_the_chain(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    alert, child = critical(mrn="1"), critical(date(2020, 1, 1), mrn="2")
    now = datetime.now(UTC)
    await chain.receive(alert, now)
    await chain.receive(child, now)
    async with console(store, chain) as client:
        await sign_in(client, "dr.ada", PASSWORD)
        board = (await client.get("/v1/console")).text
        assert "HOSP|1" in board
        assert "HOSP|2" not in board
        assert "secondary in 9 min" in board or "secondary in 10 min" in board
        url = f"/v1/console/alerts/{alert.alert_id}"
        shown = (await client.get(url)).text
        action = {"action": "acknowledge", "csrf_token": csrf(shown)}
        odd = await client.post(f"{url}/actions", data={**action, "action": "<b>ack</b>"})
        assert odd.status_code == 400
        assert "action must be acknowledge, not_my_patient or resolve" in odd.text
        assert "ack&lt;" not in odd.text  # what was sent is not quoted back, even escaped
        assert "<b>ack" not in odd.text
        forged = await client.post(f"{url}/actions", data={**action, "csrf_token": "forged"})
        assert forged.status_code == 403
        assert await store.closure(alert.alert_id) is None
        done = await client.post(f"{url}/actions", data=action)
        assert done.status_code == 303
        assert done.headers["location"] == url
        closure = await store.closure(alert.alert_id)
        assert closure is not None
        assert (closure.how, closure.by) == ("acknowledge", "dr.ada")
        assert [s.state for s in await store.escalation(alert.alert_id)][1:] == ["cancelled"] * 3
        assert "Acknowledged by dr.ada" in (await client.get(url)).text
        assert "Acknowledged by dr.ada" in (await client.get("/v1/console")).text
        audit = unlabelled((await client.get(f"{url}/audit")).text)
        assert "<td>acked</td><td>dr.ada</td>" in audit
        assert "<td>delivered</td>" in audit
        assert (await client.get("/v1/console/alerts/nope")).status_code == 404


async def test_a_superseded_alert_says_superseded_not_withdrawn(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    now = datetime.now(UTC)
    older = persistent_severe()
    newer = refractory(supersedes=older.alert_id)
    await chain.receive(older, now)
    await chain.receive(newer, now)
    async with console(store, chain) as client:
        await sign_in(client, "dr.ada", PASSWORD)
        board = (await client.get("/v1/console")).text
        assert f"/v1/console/alerts/{newer.alert_id}" in board
        assert f"/v1/console/alerts/{older.alert_id}" not in board  # its paging has ended
        url = f"/v1/console/alerts/{older.alert_id}"
        shown = unlabelled((await client.get(url)).text)
        assert "Superseded" in shown
        assert "Withdrawn" not in shown
        assert 'class="point withdrawn"' not in shown  # its counts are still true
        audit = unlabelled((await client.get(f"{url}/audit")).text)
        assert "<td>superseded</td><td>classifier</td>" in audit
        assert f"superseded by the refractory alert {newer.alert_id}" in audit


async def test_not_my_patient_from_the_console_hands_the_alert_over(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [], roster=two_services(webhook_receiver.url))
    alert = critical(mrn="1")
    await chain.receive(alert, datetime.now(UTC))
    async with console(store, chain, header="X-Forwarded-User") as client:
        ada = {"X-Forwarded-User": "dr.ada"}
        url = f"/v1/console/alerts/{alert.alert_id}"
        token = csrf((await client.get(url, headers=ada)).text)
        data = {"action": "not_my_patient", "reassign_to": "paediatric", "csrf_token": token}
        bad = await client.post(
            f"{url}/actions", data={**data, "reassign_to": "cardio"}, headers=ada
        )
        assert bad.status_code == 400
        assert (await client.post(f"{url}/actions", data=data, headers=ada)).status_code == 303
        assert paged(webhook_receiver) == ["primary", "attending"]  # the paediatric primary
        kid = {"X-Forwarded-User": "dr.kid"}
        assert "HOSP|1 (paediatric)" in (await client.get("/v1/console", headers=kid)).text
        assert "HOSP|1" not in (await client.get("/v1/console", headers=ada)).text


async def test_behind_a_proxy_the_header_names_the_user_and_strangers_are_refused(
    store: NotifierStore, webhook_receiver: WebhookReceiver, tmp_path: Path
) -> None:
    async with console(store, escalator(store, webhook_receiver, []), "X-Forwarded-User") as client:
        assert (await client.get("/v1/console")).status_code == 403
        stranger = await client.get("/v1/console", headers={"X-Forwarded-User": "mallory"})
        assert stranger.status_code == 403
        assert "not as a user of this console" in stranger.text
        board = await client.get("/v1/console", headers={"X-Forwarded-User": "dr.kid"})
        assert board.status_code == 200
        assert "Signed in as dr.kid" in board.text
        assert "plateletwatch_session=" in board.headers["set-cookie"]
        # The session cookie does not outlive the proxy's word: without the header, refused.
        assert (await client.get("/v1/console")).status_code == 403
        assert (await client.get("/v1/console/login")).headers["location"] == "/v1/console"


async def test_a_session_ended_at_sign_out_stays_ended_after_a_restart(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    async with console(store, chain) as client:
        await sign_in(client, "dr.ada", PASSWORD)
        kept = client.cookies["plateletwatch_session"]
        client.cookies.clear()
        await sign_in(client, "dr.ada", PASSWORD)
        ended = client.cookies["plateletwatch_session"]
        board = await client.get("/v1/console")
        await client.post("/v1/console/logout", data={"csrf_token": csrf(board.text)})
    async with console(store, chain) as restarted:  # another process on the same store
        for cookie, status in ((ended, 303), (kept, 200)):
            restarted.cookies.set("plateletwatch_session", cookie)
            assert (await restarted.get("/v1/console")).status_code == status


async def test_sessions_past_their_expiry_are_deleted_when_a_new_one_opens(
    store: NotifierStore,
) -> None:
    now = datetime.now(UTC)
    await store.open_session("old", "dr.ada", now + timedelta(hours=1), now)
    await store.open_session("current", "dr.ada", now + timedelta(hours=3), now)
    assert await store.session_open("old", "dr.ada")
    assert not await store.session_open("old", "dr.kid")  # a row names its user
    await store.open_session("new", "dr.kid", now + timedelta(hours=4), now + timedelta(hours=2))
    opened = [await store.session_open(s, "dr.ada") for s in ("old", "current")]
    assert opened == [False, True]
