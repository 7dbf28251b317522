"""The on-call console's routes: sign-in, the board, an alert and its audit trail, and actions.

Who is signed in comes from a session cookie (after a password sign-in) or, where the notifier
sits behind an authenticating reverse proxy, from the header that proxy sets; either way the
user must be in the console users file, which says whose alerts they see. A session counts only
while its row is in the store: signing out deletes it, for every replica and after restarts.
Every form post carries the session's CSRF token; the cookie is HttpOnly and SameSite=Strict.
"""

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from html import escape
from typing import cast
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from prometheus_client import Counter

from schemas import AckAction, AlertKind, PlateletAlert, Population
from services.notifier.alert_page import (
    STYLE,
    Step,
    alert_page,
    closed_line,
    console_actions,
)
from services.notifier.console_auth import (
    ConsoleUser,
    Session,
    hash_password,
    password_matches,
    session_from,
    start_session,
)
from services.notifier.console_pages import (
    Level,
    OpenAlert,
    audit_page,
    board_order,
    board_page,
    login_page,
)
from services.notifier.escalator import Escalator
from services.notifier.link_page import BOARD_HEADERS, SECURITY_HEADERS, page
from services.notifier.store import (
    WITHDRAWN,
    BoardEntry,
    EscalationRecord,
    NotifierStore,
    as_utc,
)

log = logging.getLogger(__name__)

SIGN_INS = Counter(
    "plateletwatch_notifier_console_sign_ins_total",
    "Console sign-in attempts, by outcome (never by user).",
    ["outcome"],
)
SESSION_COOKIE, LOGIN_COOKIE = "plateletwatch_session", "plateletwatch_login"
RECENTLY_ACKNOWLEDGED = timedelta(hours=24)  # how long an acknowledged alert stays on the board
CONSOLE_JS = """
// Refresh the board in place, so the page keeps its scroll position and focus; and say so
// plainly when it cannot, for a board that silently stopped updating would look all clear.
(function () {
  var board = document.getElementById("board");
  if (!board || !window.fetch) return;
  var every = 1000 * Number(board.dataset.refreshSeconds || 30);
  var warning = document.createElement("p");
  warning.className = "why stale";
  warning.setAttribute("role", "alert");
  warning.hidden = true;
  board.parentNode.insertBefore(warning, board);
  function refresh() {
    fetch(board.dataset.source, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (!r.ok) throw new Error("the console answered " + r.status);
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("board");
        if (!fresh) throw new Error("you have been signed out");
        board.innerHTML = fresh.innerHTML;
        warning.hidden = true;
      })
      .catch(function (e) {
        var why = e instanceof TypeError ? "the console cannot be reached" : e.message;
        warning.textContent = "This board is not up to date: " + why + ". Reload the page.";
        warning.hidden = false;
      })
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
"""


def console_router(
    store: NotifierStore,
    escalator: Escalator,
    users: dict[str, ConsoleUser],
    session_secret: bytes,
    *,
    proxy_user_header: str | None,
    session_lifetime: timedelta,
    refresh_seconds: float,
    secure_cookies: bool,
    birth_date_shown: bool = False,
    zone: tzinfo,
) -> APIRouter:
    """The console's routes; `zone` is the deployment's, for every time shown."""
    router = APIRouter(tags=["console"])

    def html(
        body: str, status: int = 200, headers: dict[str, str] = SECURITY_HEADERS
    ) -> HTMLResponse:
        return HTMLResponse(body, status, headers=headers)

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/v1/console",
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
        )

    async def signed_in(
        request: Request, now: datetime
    ) -> tuple[ConsoleUser, Session | None] | None:
        """The user, and their session if they have one yet (a proxy user may not); a cookie
        of a session signed out, here or on another replica, counts for nothing."""
        cookie = request.cookies.get(SESSION_COOKIE)
        session = session_from(session_secret, cookie, now) if cookie else None
        if session is not None and not await store.session_open(session.id, session.user):
            session = None
        if proxy_user_header is not None:
            name = request.headers.get(proxy_user_header)
            user = users.get(name or "")
            if user is None:
                return None
            return user, session if session is not None and session.user == user.name else None
        if session is None or session.user not in users:
            return None
        return users[session.user], session

    async def with_user(
        request: Request, show: Callable[[ConsoleUser, Session, datetime], Awaitable[Response]]
    ) -> Response:
        """Run `show` for the signed-in user (a proxy user gets a session cookie here);
        anyone else is sent to sign in, or refused when the proxy vouches for nobody known."""
        now = datetime.now(UTC)
        found = await signed_in(request, now)
        if found is None:
            if proxy_user_header is not None:
                return html(page("Not a console user", _NOT_A_USER), 403)
            return RedirectResponse("/v1/console/login", 303)
        user, session = found
        fresh = session is None
        if session is None:
            session = await opened_session(user, now)
        response = await show(user, session, now)
        if fresh:
            set_cookie(response, SESSION_COOKIE, session.token, _seconds(session_lifetime))
        return response

    async def opened_session(user: ConsoleUser, now: datetime) -> Session:
        session = start_session(session_secret, user.name, now, session_lifetime)
        await store.open_session(session.id, user.name, session.expires_at, now)
        return session

    def login_form_page(problem: str | None = None, status: int = 200) -> Response:
        """The sign-in form, with a fresh token in it and in a cookie (a login CSRF check)."""
        token = secrets.token_urlsafe(16)
        response = html(login_page(token, problem), status)
        set_cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    @router.get("/v1/console/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        if proxy_user_header is not None:
            return RedirectResponse("/v1/console", 303)
        return login_form_page()

    @router.post("/v1/console/login")
    async def login(request: Request) -> Response:
        form = form_fields(await request.body())
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not secrets.compare_digest(form.get("login_token", ""), expected):
            SIGN_INS.labels(outcome="stale_form").inc()
            return login_form_page("The form had expired: please try again.", 400)
        user = users.get(form.get("user", ""))
        matches = await asyncio.to_thread(_password_check, user, form.get("password", ""))
        if user is None or not matches:
            SIGN_INS.labels(outcome="refused").inc()
            log.warning("a console sign-in was refused")  # no names: they help a guesser
            return login_form_page("Wrong user name or password.", 401)
        SIGN_INS.labels(outcome="signed_in").inc()
        session = await opened_session(user, datetime.now(UTC))
        response = RedirectResponse("/v1/console", 303)
        set_cookie(response, SESSION_COOKIE, session.token, _seconds(session_lifetime))
        response.delete_cookie(LOGIN_COOKIE, path="/v1/console")
        return response

    @router.post("/v1/console/logout")
    async def logout(request: Request) -> Response:
        async def show(user: ConsoleUser, session: Session, now: datetime) -> Response:
            if not session.accepts((form_fields(await request.body())).get("csrf_token", "")):
                return _forbidden()
            await store.end_session(session.id)
            response = RedirectResponse("/v1/console/login", 303)
            response.delete_cookie(SESSION_COOKIE, path="/v1/console")
            return response

        return await with_user(request, show)

    @router.get("/v1/console", response_class=HTMLResponse)
    async def board(request: Request, kind: str = "") -> Response:
        chosen = AlertKind(kind) if kind in KINDS else None

        async def show(user: ConsoleUser, session: Session, now: datetime) -> Response:
            entries = await store.board(now - RECENTLY_ACKNOWLEDGED)
            shown = board_order([_open_alert(e) for e in entries], user.services, chosen)
            body = board_page(
                user.name,
                shown,
                chosen,
                now,
                session.csrf_token,
                refresh_seconds,
                birth_date_shown,
                zone=zone,
            )
            return html(body, headers=BOARD_HEADERS)

        return await with_user(request, show)

    async def with_alert(
        request: Request,
        alert_id: str,
        show: Callable[[PlateletAlert, list[EscalationRecord], Session], Awaitable[str]],
    ) -> Response:
        """`show` the paged alert `alert_id` (and its chain) to the signed-in user, or 404."""

        async def shown(user: ConsoleUser, session: Session, now: datetime) -> Response:
            chain = await store.escalation(alert_id)
            if not chain:
                return html(_NO_SUCH_ALERT, 404)
            alert = PlateletAlert.model_validate_json(chain[0].alert)
            return html(await show(alert, chain, session))

        return await with_user(request, shown)

    @router.get("/v1/console/alerts/{alert_id}", response_class=HTMLResponse)
    async def one_alert(request: Request, alert_id: str) -> Response:
        async def show(alert: PlateletAlert, _: list[EscalationRecord], session: Session) -> str:
            closed, withdrawn = await ending(store, alert_id, zone)
            return alert_page(
                alert,
                await trail(store, alert_id),
                console_actions(alert_id, session.csrf_token),
                closed,
                withdrawn,
                audit_link=f"/v1/console/alerts/{quote(alert_id)}/audit",
                birth_date_shown=birth_date_shown,
                zone=zone,
            )

        return await with_alert(request, alert_id, show)

    @router.get("/v1/console/alerts/{alert_id}/audit", response_class=HTMLResponse)
    async def audit(request: Request, alert_id: str) -> Response:
        async def show(alert: PlateletAlert, chain: list[EscalationRecord], _: Session) -> str:
            levels = [_level(row) for row in chain]
            return audit_page(alert, await trail(store, alert_id), levels, zone=zone)

        return await with_alert(request, alert_id, show)

    @router.post("/v1/console/alerts/{alert_id}/actions")
    async def act(request: Request, alert_id: str) -> Response:
        async def show(user: ConsoleUser, session: Session, now: datetime) -> Response:
            form = form_fields(await request.body())
            if not session.accepts(form.get("csrf_token", "")):
                return _forbidden()
            try:
                action = chosen_action(form)
                to = reassignment(form)
            except ValueError as error:
                return html(page("Not understood", f"<p>{escape(str(error))}</p>"), 400)
            if not await escalator.act(alert_id, action, user.name, now, to):
                return html(_NO_SUCH_ALERT, 404)
            return RedirectResponse(f"/v1/console/alerts/{quote(alert_id)}", 303)

        return await with_user(request, show)

    @router.get("/v1/console.css")
    async def console_css() -> Response:
        """The one stylesheet of the console and of the pages action links open."""
        return Response(STYLE, media_type="text/css", headers=_ASSET_HEADERS)

    @router.get("/v1/console.js")
    async def console_js() -> Response:
        return Response(CONSOLE_JS, media_type="text/javascript", headers=_ASSET_HEADERS)

    return router


_ASSET_HEADERS = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
KINDS = {k.value for k in AlertKind if k is not AlertKind.WITHDRAWN}
_NOT_A_USER = "<p>You are signed in, but not as a user of this console. Ask to be added.</p>"
_NO_SUCH_ALERT = page("No such alert", "<p>No alert with that id was paged.</p>")


def form_fields(body: bytes) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded), first value of each."""
    fields = parse_qs(body.decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def chosen_action(form: dict[str, str]) -> AckAction:
    """The action a console form asks for; ValueError naming the valid ones, never quoting
    what was sent (which could be anything, a patient's identifier included)."""
    try:
        return AckAction(form.get("action", ""))
    except ValueError:
        raise ValueError("action must be acknowledge, not_my_patient or resolve") from None


def reassignment(form: dict[str, str]) -> Population | None:
    """The service a "not my patient" hands the alert to; none: the next level of the chain."""
    to = form.get("reassign_to", "")
    if to not in ("", "paediatric", "adult"):
        raise ValueError("reassign_to must be paediatric or adult")
    return cast(Population, to) if to else None


def _password_check(user: ConsoleUser | None, password: str) -> bool:
    """Run off the event loop (PBKDF2 takes a good part of a second), and as long for an
    unknown name, or a user without a password, as for a known one: the time taken does not
    tell names apart."""
    return password_matches(password, (user and user.password_hash) or _unknown_user_hash())


@cache
def _unknown_user_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _forbidden() -> HTMLResponse:
    body = page("Form expired", "<p>This form is stale or was not sent by this console.</p>")
    return HTMLResponse(body, 403, headers=SECURITY_HEADERS)


def _seconds(span: timedelta) -> int:
    return int(span.total_seconds())


def _level(row: EscalationRecord) -> Level:
    return Level(row.level, row.tier, as_utc(row.due_at), row.state)


def _open_alert(entry: BoardEntry) -> OpenAlert:
    alert = PlateletAlert.model_validate_json(entry.chain[-1].alert)
    closure = entry.closure
    return OpenAlert(
        alert,
        cast(Population, entry.reassigned_to or alert.population or "adult"),
        tuple(_level(row) for row in entry.chain),
        closure.by if closure is not None else None,
        as_utc(closure.closed_at) if closure is not None else None,
    )


async def ending(store: NotifierStore, alert_id: str, zone: tzinfo) -> tuple[str | None, bool]:
    """How the alert's paging ended, in words for its page (None: it has not), and whether
    it was withdrawn."""
    closure = await store.closure(alert_id)
    if closure is None:
        return None, False
    said = closed_line(closure.how, closure.by, as_utc(closure.closed_at), zone)
    return said, closure.how == WITHDRAWN


async def trail(store: NotifierStore, alert_id: str) -> list[Step]:
    """The alert's audit trail, as its pages show it."""
    return [
        Step(as_utc(row.occurred_at), row.step, row.recipient, row.channel, row.detail)
        for row in await store.audit_trail(alert_id)
    ]
