"""The notifier's web routes: the action links in pages, and the on-call console (sign-in, the
board, an alert and its audit trail, actions), with their stylesheet and script.

Opening a link (a GET, which mail scanners and link previews also do) changes nothing: it shows
the alert page with its buttons; pressing one posts to a link, which works once. Who uses the
console comes from auth.py (a session cookie, or a trusted proxy's header); every form post
carries the session's CSRF token. Every route reads the time from the injected clock, so one
request sees one `now`. Logs name alert ids and reasons, never what a form or a feed sent.
"""

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import cache
from importlib.resources import files
from typing import Annotated, cast
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prometheus_client import Counter

from schemas import AckAction, AlertKind, PlateletAlert, Population
from services.notifier.clock import Clock, utc_now
from services.notifier.delivery.escalator import Escalator
from services.notifier.domain.links import Keys, LinkRefused, sign_link, verify_link
from services.notifier.store.repository import BoardEntry, EscalationRecord, NotifierStore, as_utc
from services.notifier.store.tables import Closing
from services.notifier.web.auth import (
    ConsoleUser,
    Session,
    hash_password,
    password_matches,
    session_from,
    start_session,
)
from services.notifier.web.views import (
    BOARD_HEADERS,
    SECURITY_HEADERS,
    Level,
    OpenAlert,
    Step,
    alert_page,
    audit_page,
    board_order,
    board_page,
    closed_line,
    console_actions,
    done_page,
    link_actions,
    login_page,
    message_page,
    refusal_page,
)

log = logging.getLogger(__name__)

SIGN_INS = Counter(
    "plateletwatch_notifier_console_sign_ins_total",
    "Console sign-in attempts, by outcome (never by user).",
    ["outcome"],
)
LINKS_REFUSED = Counter(
    "plateletwatch_notifier_links_refused_total",
    "Action links refused: forged, expired or used before.",
    ["reason"],
)
SESSION_COOKIE, LOGIN_COOKIE = "plateletwatch_session", "plateletwatch_login"
RECENTLY_ACKNOWLEDGED = timedelta(hours=24)  # how long an acknowledged alert stays on the board
KINDS = {k.value for k in AlertKind if k is not AlertKind.WITHDRAWN}
_NOT_PAGED = "no such alert was paged"  # a genuine link, but the store does not have its alert
_ASSET_HEADERS = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}


def clock(request: Request) -> datetime:
    """The time now: every route reads it here, once per request, from the app's one clock
    (`app.state.clock`, set by create_app; the UTC wall clock where none is set). A test may
    also set it with `app.dependency_overrides[clock]`."""
    now: Clock = getattr(request.app.state, "clock", utc_now)
    return now()


Now = Annotated[datetime, Depends(clock)]


async def form_fields(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded), first value of each."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


Form = Annotated[dict[str, str], Depends(form_fields)]


@dataclass(frozen=True)
class SignedIn:
    """A console user with their session; `fresh`: opened on this request (a proxy user's
    first), so the answer must set its cookie."""

    user: ConsoleUser
    session: Session
    fresh: bool


def console_router(
    store: NotifierStore,
    escalator: Escalator,
    users: dict[str, ConsoleUser],
    session_keys: Keys,
    *,
    proxy_user_header: str | None,
    session_lifetime: timedelta,
    refresh_seconds: float,
    secure_cookies: bool,
    birth_date_shown: bool = False,
    zone: tzinfo,
) -> APIRouter:
    """The console's routes; `zone` is the deployment's, for every time shown; sessions are
    signed with the first of `session_keys` and accepted under any."""
    router = APIRouter(tags=["console"])

    async def current_user(request: Request, at: Now) -> SignedIn | None:
        """The signed-in user, None for anyone else. A cookie of a session signed out, here or
        on another replica, counts for nothing; a user the proxy vouches for gets a session."""
        cookie = request.cookies.get(SESSION_COOKIE)
        session = session_from(session_keys, cookie, at) if cookie else None
        if session is not None and not await store.session_open(session.id, session.user):
            session = None
        if proxy_user_header is None:
            if session is None or session.user not in users:
                return None
            return SignedIn(users[session.user], session, fresh=False)
        user = users.get(request.headers.get(proxy_user_header) or "")
        if user is None:
            return None
        if session is not None and session.user == user.name:
            return SignedIn(user, session, fresh=False)
        return SignedIn(user, await opened_session(user, at), fresh=True)

    Visitor = Annotated[SignedIn | None, Depends(current_user)]

    async def opened_session(user: ConsoleUser, at: datetime) -> Session:
        session = start_session(session_keys, user.name, at, session_lifetime)
        await store.open_session(session.id, user.name, session.expires_at, at)
        return session

    def set_cookie(response: Response, name: str, value: str, max_age: timedelta) -> None:
        response.set_cookie(
            name,
            value,
            max_age=int(max_age.total_seconds()),
            path="/v1/console",
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
        )

    def answer(who: SignedIn, response: Response) -> Response:
        """`response`, with the session's cookie if the session is new."""
        if who.fresh:
            set_cookie(response, SESSION_COOKIE, who.session.token, session_lifetime)
        return response

    def not_signed_in() -> Response:
        """Sign in first; behind the proxy, there is no form: the proxy vouched for nobody known."""
        if proxy_user_header is not None:
            body = message_page(
                "Not a console user",
                "You are signed in, but not as a user of this console. Ask to be added.",
            )
            return _html(body, 403)
        return RedirectResponse("/v1/console/login", 303)

    def login_form_page(problem: str | None = None, status: int = 200) -> Response:
        """The sign-in form, with a fresh token in it and in a cookie (a login CSRF check)."""
        token = secrets.token_urlsafe(16)
        response = _html(login_page(token, problem), status)
        set_cookie(response, LOGIN_COOKIE, token, timedelta(hours=1))
        return response

    async def paged_alert(alert_id: str) -> tuple[PlateletAlert, list[EscalationRecord]] | None:
        chain = await store.escalation(alert_id)
        if not chain:
            return None
        return PlateletAlert.model_validate_json(chain[0].alert), chain

    @router.get("/v1/console/login", response_class=HTMLResponse)
    async def login_form() -> Response:
        if proxy_user_header is not None:
            return RedirectResponse("/v1/console", 303)
        return login_form_page()

    @router.post("/v1/console/login")
    async def login(request: Request, form: Form, at: Now) -> Response:
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
        session = await opened_session(user, at)
        response = RedirectResponse("/v1/console", 303)
        set_cookie(response, SESSION_COOKIE, session.token, session_lifetime)
        response.delete_cookie(LOGIN_COOKIE, path="/v1/console")
        return response

    @router.post("/v1/console/logout")
    async def logout(form: Form, who: Visitor) -> Response:
        if who is None:
            return not_signed_in()
        if not who.session.accepts(form.get("csrf_token", "")):
            return answer(who, _forbidden())
        await store.end_session(who.session.id)
        response = RedirectResponse("/v1/console/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/v1/console")
        return response

    @router.get("/v1/console", response_class=HTMLResponse)
    async def board(who: Visitor, at: Now, kind: str = "") -> Response:
        if who is None:
            return not_signed_in()
        chosen = AlertKind(kind) if kind in KINDS else None
        entries = await store.board(at - RECENTLY_ACKNOWLEDGED)
        shown = board_order([_open_alert(e) for e in entries], who.user.services, chosen)
        body = board_page(
            who.user.name,
            shown,
            chosen,
            at,
            who.session.csrf_token,
            refresh_seconds,
            birth_date_shown,
            zone=zone,
        )
        return answer(who, _html(body, headers=BOARD_HEADERS))

    @router.get("/v1/console/alerts/{alert_id}", response_class=HTMLResponse)
    async def one_alert(alert_id: str, who: Visitor) -> Response:
        if who is None:
            return not_signed_in()
        found = await paged_alert(alert_id)
        if found is None:
            return answer(who, _no_such_alert())
        closed, withdrawn = await ending(store, alert_id, zone)
        body = alert_page(
            found[0],
            await trail(store, alert_id),
            console_actions(alert_id, who.session.csrf_token),
            closed,
            withdrawn,
            audit_link=f"/v1/console/alerts/{quote(alert_id)}/audit",
            birth_date_shown=birth_date_shown,
            zone=zone,
        )
        return answer(who, _html(body))

    @router.get("/v1/console/alerts/{alert_id}/audit", response_class=HTMLResponse)
    async def audit(alert_id: str, who: Visitor) -> Response:
        if who is None:
            return not_signed_in()
        found = await paged_alert(alert_id)
        if found is None:
            return answer(who, _no_such_alert())
        alert, chain = found
        levels = [_level(row) for row in chain]
        body = audit_page(alert, await trail(store, alert_id), levels, zone=zone)
        return answer(who, _html(body))

    @router.post("/v1/console/alerts/{alert_id}/actions")
    async def act(alert_id: str, form: Form, who: Visitor, at: Now) -> Response:
        if who is None:
            return not_signed_in()
        if not who.session.accepts(form.get("csrf_token", "")):
            return answer(who, _forbidden())
        try:
            action = chosen_action(form)
            to = reassignment(form)
        except ValueError as error:
            return answer(who, _html(message_page("Not understood", str(error)), 400))
        if not await escalator.act(alert_id, action, who.user.name, at, to):
            return answer(who, _no_such_alert())
        return answer(who, RedirectResponse(f"/v1/console/alerts/{quote(alert_id)}", 303))

    @router.get("/v1/console.css")
    async def console_css() -> Response:
        """The one stylesheet of the console and of the pages action links open."""
        return Response(_static("console.css"), media_type="text/css", headers=_ASSET_HEADERS)

    @router.get("/v1/console.js")
    async def console_js() -> Response:
        """The board's refresh script: the only script any page runs."""
        body = _static("console.js")
        return Response(body, media_type="text/javascript", headers=_ASSET_HEADERS)

    return router


def link_router(
    store: NotifierStore,
    escalator: Escalator,
    link_keys: Keys,
    link_lifetime: timedelta,
    *,
    birth_date_shown: bool = False,
    zone: tzinfo,
) -> APIRouter:
    """The routes of the action links in pages: links are accepted under any of `link_keys`,
    and the page's buttons are fresh links signed with the first."""
    router = APIRouter(tags=["links"])

    def refused(
        reason: str, html: bool, alert_id: str | None = None, status: int = 403
    ) -> Response:
        """The refusal page (or JSON) saying why; 404 where the alert is not in the store."""
        LINKS_REFUSED.labels(reason=reason).inc()
        log.warning(
            "refused an action link%s: %s", f" for alert {alert_id}" if alert_id else "", reason
        )
        if html:
            return _html(refusal_page(reason), status)
        return JSONResponse({"error": reason}, status_code=status)

    @router.get("/v1/links/{token}", response_class=HTMLResponse)
    async def open_link(token: str, at: Now) -> Response:
        """The alert page, with a button per action: opening a link changes nothing."""
        try:
            claim = verify_link(link_keys, token, at)
        except LinkRefused as refusal:
            return refused(str(refusal), html=True)
        if await store.link_used(claim.nonce):
            return refused("the link has been used already", html=True, alert_id=claim.alert_id)
        steps = await store.escalation(claim.alert_id)
        if not steps:
            return refused(_NOT_PAGED, html=True, alert_id=claim.alert_id, status=404)
        alert = PlateletAlert.model_validate_json(steps[0].alert)
        buttons = {  # fresh single-use links for this recipient, one per button
            action: "/v1/links/"
            + sign_link(link_keys, claim.alert_id, action, claim.recipient, at, link_lifetime)
            for action in AckAction
        }
        closed, withdrawn = await ending(store, claim.alert_id, zone)
        body = alert_page(
            alert,
            await trail(store, claim.alert_id),
            link_actions(buttons),
            closed,
            withdrawn,
            birth_date_shown=birth_date_shown,
            zone=zone,
        )
        return _html(body)

    @router.post("/v1/links/{token}")
    async def follow_link(token: str, request: Request, form: Form, at: Now) -> Response:
        """Acknowledge, decline ("not my patient") or resolve, through a link from a page: the
        button of the page above (answered in HTML), or a client posting directly (JSON)."""
        html = "text/html" in request.headers.get("accept", "")
        try:
            claim = verify_link(link_keys, token, at)
        except LinkRefused as refusal:
            return refused(str(refusal), html)
        try:
            to = reassignment(form)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        if not await store.use_link(claim.nonce, at):
            return refused("the link has been used already", html, claim.alert_id)
        if not await escalator.act(claim.alert_id, claim.action, claim.recipient, at, to):
            return refused(_NOT_PAGED, html, claim.alert_id, status=404)
        if html:
            return _html(done_page(claim.action, to))
        return JSONResponse({"alert_id": claim.alert_id, "action": claim.action.value})

    return router


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


async def ending(store: NotifierStore, alert_id: str, zone: tzinfo) -> tuple[str | None, bool]:
    """How the alert's paging ended, in words for its page (None: it has not), and whether
    it was withdrawn."""
    closure = await store.closure(alert_id)
    if closure is None:
        return None, False
    said = closed_line(closure.how, closure.by, as_utc(closure.closed_at), zone)
    return said, closure.how == Closing.WITHDRAWN


async def trail(store: NotifierStore, alert_id: str) -> list[Step]:
    """The alert's audit trail, as its pages show it."""
    return [
        Step(as_utc(row.occurred_at), row.step, row.recipient, row.channel, row.detail)
        for row in await store.audit_trail(alert_id)
    ]


def _html(body: str, status: int = 200, headers: dict[str, str] = SECURITY_HEADERS) -> Response:
    return HTMLResponse(body, status, headers=headers)


def _forbidden() -> Response:
    body = message_page("Form expired", "This form is stale or was not sent by this console.")
    return _html(body, 403)


def _no_such_alert() -> Response:
    return _html(message_page("No such alert", "No alert with that id was paged."), 404)


@cache
def _static(name: str) -> str:
    """A file of static/, read once; the package ships them (package-data)."""
    return files("services.notifier.web").joinpath("static", name).read_text(encoding="utf-8")


def _password_check(user: ConsoleUser | None, password: str) -> bool:
    """Run off the event loop (PBKDF2 takes a good part of a second), and as long for an
    unknown name, or a user without a password, as for a known one: the time taken does not
    tell names apart."""
    return password_matches(password, (user and user.password_hash) or _unknown_user_hash())


@cache
def _unknown_user_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


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
