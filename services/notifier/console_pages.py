"""The on-call console's pages: sign-in, the board of open alerts, and an alert's audit trail.
Pure: HTML from plain data; the routes that gather it are in console.py.

The board puts the alerts nobody has acknowledged first, oldest first, with the level paged and
the time left before the next one; alerts acknowledged recently follow, so a colleague sees who
took which. It refreshes itself (console.js replaces the table, so the page keeps its scroll);
without script, a link does it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from html import escape
from urllib.parse import quote

from schemas import AlertKind, PlateletAlert, Population
from services.notifier.alert_page import Step, history_table, patient_label, table
from services.notifier.link_page import page
from services.notifier.message import UNIT, kind_name
from services.notifier.wall_clock import offset, shown_at

KIND_NAMES = {  # the kind filter's choices; each alert is named by message.kind_name
    AlertKind.CRITICAL_LOW: "Critical low",
    AlertKind.PERSISTENT_SEVERE: "Sustained low count",
    AlertKind.REFRACTORY: "Refractory",
}
PAGED, PENDING = "paged", "pending"


@dataclass(frozen=True)
class Level:
    level: int
    tier: str
    due_at: datetime
    state: str  # pending, paged, cancelled


@dataclass(frozen=True)
class OpenAlert:
    alert: PlateletAlert
    service: Population  # whose on-call it pages: its population, or where it was handed
    levels: tuple[Level, ...]  # by level
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None

    @property
    def opened_at(self) -> datetime:
        return self.levels[0].due_at

    @property
    def last_paged(self) -> Level | None:
        return next((lv for lv in reversed(self.levels) if lv.state == PAGED), None)

    @property
    def next_due(self) -> Level | None:
        return next((lv for lv in self.levels if lv.state == PENDING), None)


def board_order(
    alerts: Sequence[OpenAlert], services: Sequence[Population], kind: AlertKind | None
) -> list[OpenAlert]:
    """The user's services' alerts of `kind` (or all): unacknowledged first, oldest first; then
    the acknowledged, most recently acknowledged first."""
    shown = [a for a in alerts if a.service in services and kind in (None, a.alert.kind)]
    waiting = sorted((a for a in shown if a.acknowledged_at is None), key=lambda a: a.opened_at)
    taken = sorted(
        (a for a in shown if a.acknowledged_at is not None),
        key=lambda a: a.acknowledged_at or a.opened_at,
        reverse=True,
    )
    return waiting + taken


def board_page(
    user: str,
    alerts: Sequence[OpenAlert],
    kind: AlertKind | None,
    now: datetime,
    csrf_token: str,
    refresh_seconds: float,
    birth_date_shown: bool = False,
    *,
    zone: tzinfo,
) -> str:
    """The board for `user`, its times in `zone`."""
    options = "".join(
        f'<option value="{k.value}"{" selected" if k is kind else ""}>{name}</option>'
        for k, name in KIND_NAMES.items()
    )
    here = "/v1/console" + (f"?kind={quote(kind.value)}" if kind else "")
    waiting = sum(a.acknowledged_at is None for a in alerts)
    body = f"""<header class="bar"><p>Signed in as {escape(user)}</p>
<form method="post" action="/v1/console/logout">{_csrf_field(csrf_token)}
<button type="submit">Sign out</button></form></header>
<form method="get" action="/v1/console" class="filter"><label for="kind">Kind</label>
<select id="kind" name="kind"><option value="">All kinds</option>{options}</select>
<button type="submit">Show</button></form>
<section id="board" aria-live="polite" data-refresh-seconds="{refresh_seconds:g}"
 data-source="{escape(here)}">
<p>{waiting} waiting for acknowledgement; updated {_updated(now, zone)}.
<a href="{escape(here)}">Refresh</a></p>
{_board_table(alerts, now, birth_date_shown, zone)}
</section>
<script src="/v1/console.js" defer></script>"""
    refresh = f'<noscript><meta http-equiv="refresh" content="{refresh_seconds:g}"></noscript>'
    return page("Open alerts", body, head=refresh)


def _csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{escape(token)}">'


def _updated(now: datetime, zone: tzinfo) -> str:
    local = now.astimezone(zone)
    return f"{local:%H:%M:%S} {offset(local)}"


def _board_table(
    alerts: Sequence[OpenAlert], now: datetime, birth_date_shown: bool, zone: tzinfo
) -> str:
    if not alerts:
        return "<p>No open alerts.</p>"
    columns = ("Alert", "Patient", "Waiting since", "Paged", "Next escalation", "Status")
    return table(columns, [_board_row(a, now, birth_date_shown, zone) for a in alerts])


def _board_row(
    open_alert: OpenAlert, now: datetime, birth_date_shown: bool, zone: tzinfo
) -> tuple[str, ...]:
    alert = open_alert.alert
    value = f"{alert.value_10e9_per_l:g} {UNIT}" if alert.value_10e9_per_l is not None else ""
    paged = open_alert.last_paged
    due = open_alert.next_due
    if open_alert.acknowledged_at is not None:
        status = f"Acknowledged by {escape(open_alert.acknowledged_by or '')}"
        upcoming = "stopped"
    else:
        status = '<strong class="waiting">Not acknowledged</strong>'
        if due is None:
            upcoming = '<strong class="waiting">none left: chain exhausted</strong>'
        elif due.due_at <= now:
            upcoming = f"{escape(due.tier)} due now"
        else:
            upcoming = f"{escape(due.tier)} in {_duration(due.due_at - now)}"
    link = f"/v1/console/alerts/{quote(alert.alert_id)}"
    ward = f", ward {escape(alert.location)}" if alert.location else ""
    return (
        f'<a href="{escape(link)}">{escape(kind_name(alert.kind, alert.evidence))}</a> '
        + escape(value),
        f"{patient_label(alert.patient, birth_date_shown)} ({escape(open_alert.service)}){ward}",
        f"{shown_at(open_alert.opened_at, zone)} ({_duration(now - open_alert.opened_at)} ago)",
        _paged(paged),
        upcoming,
        status,
    )


def _paged(level: Level | None) -> str:
    return "not yet" if level is None else f"level {level.level}: {escape(level.tier)}"


def _duration(span: timedelta) -> str:
    minutes = max(0, int(span.total_seconds() // 60))
    if minutes == 0:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours // 24} days"


def login_page(login_token: str, problem: str | None = None) -> str:
    warning = f'<p class="why" role="alert">{escape(problem)}</p>' if problem else ""
    return page(
        "Sign in",
        f"""{warning}<form method="post" action="/v1/console/login" class="login">
<input type="hidden" name="login_token" value="{escape(login_token)}">
<label for="user">User name</label><input id="user" name="user" autocomplete="username"
 required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<button type="submit" class="primary">Sign in</button></form>""",
    )


def audit_page(
    alert: PlateletAlert, trail: Sequence[Step], levels: Sequence[Level], *, zone: tzinfo
) -> str:
    """Everything that happened to an alert: deliveries and their attempts, escalations,
    actions, withdrawal or supersession; and the chain's levels with their times, in `zone`."""
    chain = table(
        ("Level", "Tier", "Due", "State"),
        [
            (
                str(lv.level),
                escape(lv.tier),
                shown_at(lv.due_at, zone, year=True, seconds=True),
                escape(lv.state),
            )
            for lv in levels
        ],
    )
    link = f"/v1/console/alerts/{quote(alert.alert_id)}"
    return page(
        "Audit trail",
        f"""<p><a href="{escape(link)}">{escape(kind_name(alert.kind, alert.evidence))} for
 {escape(alert.patient.identifier.key)}</a>, alert {escape(alert.alert_id)}</p>
<h2>Timeline</h2>{history_table(trail, zone)}
<h2>Escalation chain</h2>{chain}
<p><a href="/v1/console">Back to the board</a></p>""",
    )
