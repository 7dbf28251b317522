"""What the notifier's pages show, and the pages themselves. Pure: plain data in, HTML out.

Every page is a Jinja2 template (templates/) rendered with autoescape on, so nothing from a feed,
a form or the store becomes markup; the pages load only /v1/console.css (and the board its
/v1/console.js), and run no inline script or style. The alert page a link opens shows what, why,
the platelet trend (chart.py), the evidence, who has been paged, and the buttons; the console adds
the board of open alerts and each alert's audit trail. A page title never names the patient:
titles land in browser history and tab lists.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined

from schemas import AckAction, AlertKind, EvidenceResult, Patient, PlateletAlert, Population
from services.notifier.domain.message import UNIT, headline, kind_name, render_message
from services.notifier.store.tables import Closing, LevelState
from services.notifier.wall_clock import offset, shown_at
from services.notifier.web.chart import chart

_POLICY = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
SECURITY_HEADERS = {
    "Content-Security-Policy": _POLICY + "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a link's token is in its address
    "Cache-Control": "no-store",
}
BOARD_HEADERS = SECURITY_HEADERS | {  # its own refresh script, fetching the board: nothing else
    "Content-Security-Policy": _POLICY + "base-uri 'none'; script-src 'self'; connect-src 'self'"
}
KIND_NAMES = {  # the kind filter's choices; each alert is named by message.kind_name
    AlertKind.CRITICAL_LOW: "Critical low",
    AlertKind.PERSISTENT_SEVERE: "Sustained low count",
    AlertKind.REFRACTORY: "Refractory",
}
_BUTTONS = {
    AckAction.ACKNOWLEDGE: "Acknowledge",
    AckAction.NOT_MY_PATIENT: "Not my patient",
    AckAction.RESOLVE: "Resolve",
}
_DONE = {
    AckAction.ACKNOWLEDGE: "Acknowledged: the escalation has stopped.",
    AckAction.NOT_MY_PATIENT: "Passed on: the next on call is being paged.",
    AckAction.RESOLVE: "Resolved: the escalation has stopped.",
}
_ENDED = {
    Closing.ACKNOWLEDGED: "Acknowledged",
    Closing.RESOLVED: "Resolved",
    Closing.WITHDRAWN: "Withdrawn",
}
_PAGES = Environment(
    loader=PackageLoader("services.notifier.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Step:
    """One line of the paging history (from the audit trail): roles, never people's names."""

    at: datetime
    step: str
    recipient: str
    channel: str
    detail: str | None


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
        return next((lv for lv in reversed(self.levels) if lv.state == LevelState.PAGED), None)

    @property
    def next_due(self) -> Level | None:
        return next((lv for lv in self.levels if lv.state == LevelState.PENDING), None)


@dataclass(frozen=True)
class ActionForm:
    """One button of an alert page: a form posting `fields` to `url`; "not my patient" offers
    to hand the alert to the other service's on-call."""

    action: AckAction
    url: str
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return _BUTTONS[self.action]

    @property
    def primary(self) -> bool:
        return self.action is AckAction.ACKNOWLEDGE

    @property
    def offers_reassignment(self) -> bool:
        return self.action is AckAction.NOT_MY_PATIENT


def link_actions(buttons: Mapping[AckAction, str]) -> list[ActionForm]:
    """Forms posting to the signed single-use links `buttons` (one per action)."""
    return [ActionForm(action, url) for action, url in buttons.items()]


def console_actions(alert_id: str, csrf_token: str) -> list[ActionForm]:
    """Forms for a signed-in console user, each carrying the session's CSRF token."""
    url = f"/v1/console/alerts/{quote(alert_id)}/actions"
    return [
        ActionForm(action, url, (("csrf_token", csrf_token), ("action", action.value)))
        for action in AckAction
    ]


def closed_line(how: Closing, by: str, at: datetime, zone: tzinfo) -> str:
    """How an alert's paging ended, for its page: "Acknowledged by dr.ada at 28 Nov 03:48
    +01:00"; a superseded alert says a newer alert took over (it was not wrong)."""
    if how == Closing.SUPERSEDED:
        return f"Superseded at {shown_at(at, zone)}: a newer alert took over its paging"
    return f"{_ENDED[how]} by {by} at {shown_at(at, zone)}"


def patient_label(patient: Patient, birth_date_shown: bool) -> str:
    """The patient as the console shows them: the identifier, and the birth date only where
    the deployment allows it (PLATELETWATCH_NOTIFIER_SHOW_BIRTH_DATE)."""
    label = patient.identifier.key
    if birth_date_shown and patient.birth_date is not None:
        label += f", born {patient.birth_date:%Y-%m-%d}"
    return label


def alert_page(
    alert: PlateletAlert,
    history: Sequence[Step],
    actions: Sequence[ActionForm],
    closed: str | None = None,
    withdrawn: bool = False,
    audit_link: str | None = None,
    birth_date_shown: bool = False,
    *,
    zone: tzinfo,
) -> str:
    """The page, its times in `zone`; `actions` its buttons (link_actions or console_actions),
    `closed` says how its paging ended, if it did; a withdrawn alert offers no buttons and its
    counts are drawn as withdrawn."""
    points = [*alert.evidence.preceding, *alert.evidence.results]
    evidence = {p.result_id for p in alert.evidence.results}
    baseline, taken = alert.evidence.baseline_10e9_per_l, alert.evidence.baseline_collected_at
    caption = f"Baseline {baseline:g} {UNIT}" if baseline is not None else ""
    caption += f", {shown_at(taken, zone, year=True)}" if caption and taken is not None else ""
    rows = [
        (
            shown_at(p.collected_at, zone, year=True),
            f"{p.count.comparator or ''}{p.count.value_10e9_per_l:g}",
            f"{p.count.original_value} {p.count.original_unit}",
            p.status.value,
            p.result_id,
            "evidence" if p.result_id in evidence else "earlier",
        )
        for p in points
    ]
    return _render(
        "alert.html",
        heading=headline(alert),
        title=f"{alert.kind.value}, alert {alert.alert_id}",  # no patient: see the module
        alert=alert,
        patient=patient_label(alert.patient, birth_date_shown),
        line=render_message(alert, zone=zone).line,
        closed=closed,
        actions=() if withdrawn else actions,
        withdrawn=withdrawn,
        chart=chart(points, alert, withdrawn, zone=zone) if points else None,
        evidence_columns=("Collected", UNIT, "As reported", "Status", "Result", "Part"),
        evidence_rows=rows,
        evidence_caption=caption,
        history=_history_rows(history, zone),
        audit_link=audit_link,
    )


def trend_chart(
    points: Sequence[EvidenceResult], alert: PlateletAlert, withdrawn: bool = False, *, zone: tzinfo
) -> str:
    """The chart of the alert page alone, as SVG (or a line saying there is nothing to plot)."""
    return _render(
        "chart.html", chart=chart(points, alert, withdrawn, zone=zone) if points else None
    )


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


@dataclass(frozen=True)
class BoardRow:
    """One open alert as the board lists it; `waiting` marks what nobody has taken yet."""

    link: str
    name: str
    value: str
    patient: str
    opened: str
    paged: str
    upcoming: str
    upcoming_urgent: bool
    status: str
    waiting: bool


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
    """The board for `user`, its times in `zone`; the table refreshes itself every
    `refresh_seconds` (console.js, or without script a meta refresh)."""
    local = now.astimezone(zone)
    return _render(
        "board.html",
        heading="Open alerts",
        title=None,
        user=user,
        kinds=[(k.value, name, k is kind) for k, name in KIND_NAMES.items()],
        here="/v1/console" + (f"?kind={quote(kind.value)}" if kind else ""),
        waiting=sum(a.acknowledged_at is None for a in alerts),
        updated=f"{local:%H:%M:%S} {offset(local)}",
        refresh=f"{refresh_seconds:g}",
        csrf_token=csrf_token,
        rows=[_board_row(a, now, birth_date_shown, zone) for a in alerts],
    )


def _board_row(
    open_alert: OpenAlert, now: datetime, birth_date_shown: bool, zone: tzinfo
) -> BoardRow:
    alert = open_alert.alert
    paged, due = open_alert.last_paged, open_alert.next_due
    urgent = False
    if open_alert.acknowledged_at is not None:
        upcoming = "stopped"
    elif due is None:
        upcoming, urgent = "none left: chain exhausted", True
    elif due.due_at <= now:
        upcoming = f"{due.tier} due now"
    else:
        upcoming = f"{due.tier} in {_duration(due.due_at - now)}"
    ward = f", ward {alert.location}" if alert.location else ""
    return BoardRow(
        link=f"/v1/console/alerts/{quote(alert.alert_id)}",
        name=kind_name(alert.kind, alert.evidence),
        value=f"{alert.value_10e9_per_l:g} {UNIT}" if alert.value_10e9_per_l is not None else "",
        patient=f"{patient_label(alert.patient, birth_date_shown)} ({open_alert.service}){ward}",
        opened=f"{shown_at(open_alert.opened_at, zone)} "
        f"({_duration(now - open_alert.opened_at)} ago)",
        paged="not yet" if paged is None else f"level {paged.level}: {paged.tier}",
        upcoming=upcoming,
        upcoming_urgent=urgent,
        status=f"Acknowledged by {open_alert.acknowledged_by or ''}",
        waiting=open_alert.acknowledged_at is None,
    )


def _duration(span: timedelta) -> str:
    minutes = max(0, int(span.total_seconds() // 60))
    if minutes == 0:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours // 24} days"


def login_page(login_token: str, problem: str | None = None) -> str:
    return _render(
        "login.html", heading="Sign in", title=None, login_token=login_token, problem=problem
    )


def audit_page(
    alert: PlateletAlert, trail: Sequence[Step], levels: Sequence[Level], *, zone: tzinfo
) -> str:
    """Everything that happened to an alert: deliveries and their attempts, escalations,
    actions, withdrawal or supersession; and the chain's levels with their times, in `zone`."""
    return _render(
        "audit.html",
        heading="Audit trail",
        title=None,
        alert=alert,
        name=kind_name(alert.kind, alert.evidence),
        link=f"/v1/console/alerts/{quote(alert.alert_id)}",
        history=_history_rows(trail, zone),
        chain=[
            (str(lv.level), lv.tier, shown_at(lv.due_at, zone, year=True, seconds=True), lv.state)
            for lv in levels
        ],
    )


def done_page(action: AckAction, reassigned_to: str | None = None) -> str:
    """What pressing a link's button did."""
    said = _DONE[action]
    if reassigned_to is not None:
        said = f"Passed on: the {reassigned_to} on call is being paged."
    return message_page(_BUTTONS[action], said)


def refusal_page(reason: str) -> str:
    """Why a link cannot be used, and what to do instead."""
    return message_page(
        "Link refused",
        f"This link cannot be used: {reason}.",
        "Open the alert from a newer page, or call the laboratory.",
    )


def message_page(heading: str, *paragraphs: str) -> str:
    """A page saying something in plain paragraphs: a refusal, an error, what was done."""
    return _render("message.html", heading=heading, title=None, paragraphs=paragraphs)


def _history_rows(history: Sequence[Step], zone: tzinfo) -> list[tuple[str, ...]]:
    return [
        (
            shown_at(s.at, zone, year=True, seconds=True),
            s.step,
            s.recipient,
            s.channel,
            s.detail or "",
        )
        for s in history
    ]


def _render(template: str, **values: Any) -> str:
    return _PAGES.get_template(template).render(values)
