"""The alert page a link from a page opens: what, why, the platelet trend, the evidence, who has
been paged, and the buttons. Pure: HTML and SVG from the alert and its audit trail, no script.

The chart plots counts on a logarithmic axis (1 to 1000 x10^9/L, where 5 and 15 are as far apart
as 50 and 150), with the critical limit and 30 x10^9/L as lines, treatments as marked days, and a
corrected count drawn as a hollow point. Every point has a text title, and the chart a summary,
for screen readers.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape
from urllib.parse import quote

from schemas import (
    AckAction,
    EvidenceResult,
    Patient,
    PlateletAlert,
    ProcedureEvent,
    ResultStatus,
)
from services.notifier.domain.message import UNIT, headline
from services.notifier.domain.message import render_message as render_page
from services.notifier.link_page import page
from services.notifier.wall_clock import shown_at, shown_on

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 400, 240, 40, 12, 16, 24  # phone-sized units
LOW, HIGH = 1.0, 1000.0  # x10^9/L, the axis range
LINES = ((20.0, "critical"), (30.0, "30"))
BUTTONS = {
    AckAction.ACKNOWLEDGE: "Acknowledge",
    AckAction.NOT_MY_PATIENT: "Not my patient",
    AckAction.RESOLVE: "Resolve",
}
STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:12px;color:#111}
h1{font-size:1.3em;margin:.2em 0}.why{background:#fdecea;border-left:4px solid #b00020;padding:8px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #ddd;overflow-wrap:anywhere}svg{width:100%;height:auto;
max-width:640px}.actions{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}button{font-size:1em;
padding:12px 16px;min-width:44px;min-height:44px}.primary{background:#b00020;color:#fff;border:0}
.point{fill:#b00020}.corrected{fill:#fff;stroke:#b00020;stroke-width:2}.limit{stroke:#b00020;
stroke-dasharray:4 4}.limit30{stroke:#888;stroke-dasharray:2 4}.treatment{stroke:#1565c0}
.axis{stroke:#444}text{font-size:12px;fill:#333}.withdrawn{fill:#fff;stroke:#777}
.cross{stroke:#777;stroke-width:2}.closed{background:#e8f0fe;border-left:4px solid #1565c0;
padding:8px}.bar,.filter{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.login{display:grid;gap:8px;max-width:320px}input,select{font-size:1em;padding:8px;
min-height:44px}.waiting{color:#b00020}a{color:#0b57d0}:focus-visible{outline:3px solid #0b57d0;
outline-offset:2px}
@media (max-width:640px){table.cards thead{position:absolute;
left:-9999px}table.cards tr{display:block;border:1px solid #ddd;border-radius:6px;margin:0 0 10px;
padding:6px}table.cards td{display:block;border:0;padding:2px 4px}table.cards td::before{
content:attr(data-label) ": ";font-weight:600}table.cards td:empty{display:none}
table.cards caption{text-align:left}}
"""


@dataclass(frozen=True)
class Step:
    """One line of the paging history (from the audit trail): roles, never people's names."""

    at: datetime
    step: str
    recipient: str
    channel: str
    detail: str | None


_ENDED = {"acknowledge": "Acknowledged", "resolve": "Resolved", "withdrawn": "Withdrawn"}


def closed_line(how: str, by: str, at: datetime, zone: tzinfo) -> str:
    """How an alert's paging ended, for its page: "Acknowledged by dr.ada at 28 Nov 03:48
    +01:00"; a superseded alert says a newer alert took over (it was not wrong)."""
    if how == "superseded":
        return f"Superseded at {shown_at(at, zone)}: a newer alert took over its paging"
    return f"{_ENDED.get(how, how)} by {by} at {shown_at(at, zone)}"


def patient_label(patient: Patient, birth_date_shown: bool) -> str:
    """The patient as the console shows them: the identifier, and the birth date only where
    the deployment allows it (PLATELETWATCH_NOTIFIER_SHOW_BIRTH_DATE). HTML, escaped."""
    label = escape(patient.identifier.key)
    if birth_date_shown and patient.birth_date is not None:
        label += f", born {patient.birth_date:%Y-%m-%d}"
    return label


def link_actions(buttons: Mapping[AckAction, str]) -> str:
    """Forms posting to the signed single-use links `buttons` (one per action)."""
    return "".join(_action_form(action, url, "") for action, url in buttons.items())


def console_actions(alert_id: str, csrf_token: str) -> str:
    """Forms for a signed-in console user, each carrying the session's CSRF token."""
    url = f"/v1/console/alerts/{quote(alert_id)}/actions"
    hidden = f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
    return "".join(
        _action_form(
            action, url, hidden + f'<input type="hidden" name="action" value="{action.value}">'
        )
        for action in AckAction
    )


def _action_form(action: AckAction, url: str, hidden: str) -> str:
    """One button; "not my patient" offers to hand the alert to the other service's on-call."""
    choice = ""
    if action is AckAction.NOT_MY_PATIENT:
        choice = (
            '<label for="reassign_to">Pass to</label><select id="reassign_to" '
            'name="reassign_to"><option value="">the next on call</option>'
            '<option value="paediatric">paediatric on call</option>'
            '<option value="adult">adult on call</option></select>'
        )
    primary = " class=primary" if action is AckAction.ACKNOWLEDGE else ""
    return (
        f'<form method="post" action="{escape(url)}">{hidden}{choice}'
        f"<button type=submit{primary}>{BUTTONS[action]}</button></form>"
    )


def alert_page(
    alert: PlateletAlert,
    history: Sequence[Step],
    actions: str,
    closed: str | None = None,
    withdrawn: bool = False,
    audit_link: str | None = None,
    birth_date_shown: bool = False,
    *,
    zone: tzinfo,
) -> str:
    """The page, its times in `zone`; `actions` are its forms (link_actions or
    console_actions), `closed` says how its paging ended, if it did; a withdrawn alert's counts
    are drawn as withdrawn."""
    line = render_page(alert, zone=zone).line
    points = [*alert.evidence.preceding, *alert.evidence.results]
    ward = f", ward {escape(alert.location)}" if alert.location else ""
    population = f" ({alert.population})" if alert.population else ""
    note = f"<p>{escape(alert.evidence.note)}</p>" if alert.evidence.note else ""
    state = f'<p class="closed" role="status">{escape(closed)}</p>' if closed else ""
    forms = "" if withdrawn else f'<div class="actions">{actions}</div>'
    audit = f'<p><a href="{escape(audit_link)}">Audit trail</a></p>' if audit_link else ""
    body = f"""<p>Patient {patient_label(alert.patient, birth_date_shown)}{population}{ward}</p>
<div class="why" role="note"><p>{escape(line)}</p>{note}
<p>Rule {escape(alert.rule.id)}, rules file {escape(alert.rule.version)}</p></div>
{state}{forms}
<h2>Platelet trend</h2>
{trend_chart(points, alert, withdrawn, zone=zone)}
<h2>Evidence</h2>
{_evidence_table(points, alert, zone)}
<h2>Paged</h2>
{history_table(history, zone)}
{audit}"""
    title = f"{alert.kind.value}, alert {alert.alert_id}"  # history and tab lists: no patient
    return page(headline(alert), body, title=title)


def trend_chart(
    points: Sequence[EvidenceResult],
    alert: PlateletAlert,
    withdrawn: bool = False,
    *,
    zone: tzinfo,
) -> str:
    """An SVG of the counts over time, log axis, limits, treatments and corrections marked,
    dates in `zone`; the evidence of a withdrawn alert drawn as withdrawn (grey, crossed out)."""
    if not points:
        return "<p>No counts to plot.</p>"
    times = [p.collected_at for p in points]
    treatments = [
        (t.performed_at if isinstance(t, ProcedureEvent) else t.started_at, t.name)
        for t in alert.evidence.treatments
    ]
    first = min([*times, *(at for at, _ in treatments)])
    last = max([*times, *(at for at, _ in treatments)])
    span = max((last - first).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (at - first).total_seconds() / span

    def y(value: float) -> float:
        clamped = min(max(value, LOW), HIGH)
        share = (math.log10(clamped) - math.log10(LOW)) / (math.log10(HIGH) - math.log10(LOW))
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - share)

    parts = [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
        *(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
            for v in (1, 10, 100, 1000)
        ),
        f'<text x="{LEFT}" y="{HEIGHT - 6}">{shown_on(first, zone, year=True)}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f"{shown_on(last, zone, year=True)}</text>",
        *(
            f'<line class="{"limit" if label == "critical" else "limit30"}" x1="{LEFT}" '
            f'y1="{y(v):.1f}" x2="{WIDTH - RIGHT}" y2="{y(v):.1f}"><title>{label} '
            f"({v:g} {UNIT})</title></line>"
            for v, label in LINES
        ),
        *(
            f'<line class="treatment" x1="{x(at):.1f}" y1="{TOP}" x2="{x(at):.1f}" '
            f'y2="{HEIGHT - BOTTOM}"><title>{escape(name)} from {shown_on(at, zone, year=True)}'
            "</title></line>"
            f'<text x="{x(at) + 3:.1f}" y="{TOP + 10}">{escape(name)}</text>'
            for at, name in treatments
        ),
    ]
    coordinates = [(x(p.collected_at), y(p.count.value_10e9_per_l)) for p in points]
    if len(coordinates) > 1:
        path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coordinates)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#b00020"/>')
    evidence = {p.result_id for p in alert.evidence.results}
    for point, (cx, cy) in zip(points, coordinates, strict=True):
        shown = f"{point.count.original_value} {point.count.original_unit}"
        corrected = point.status is not ResultStatus.FINAL
        struck = withdrawn and point.result_id in evidence
        marks = [point.status.value] * corrected + ["withdrawn"] * struck
        classes = "point" + " corrected" * corrected + " withdrawn" * struck
        cross = (
            f'<path class="cross" d="M{cx - 6:.1f},{cy - 6:.1f}L{cx + 6:.1f},{cy + 6:.1f}'
            f'M{cx - 6:.1f},{cy + 6:.1f}L{cx + 6:.1f},{cy - 6:.1f}"/>'
            if struck
            else ""
        )
        said = f" ({', '.join(marks)})" if marks else ""
        parts.append(
            f'<circle class="{classes}" cx="{cx:.1f}" cy="{cy:.1f}" r="5"><title>'
            f"{escape(shown)} on {shown_at(point.collected_at, zone, year=True)}{said}</title>"
            "</circle>" + cross
        )
    values = ", ".join(f"{p.count.value_10e9_per_l:g}" for p in points)
    summary = f"Platelet counts over time, oldest first: {values} {UNIT}"
    if withdrawn:
        summary += "; this alert was withdrawn and its counts no longer support it"
    return (
        f'<svg role="img" aria-label="{escape(summary)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _evidence_table(points: Sequence[EvidenceResult], alert: PlateletAlert, zone: tzinfo) -> str:
    evidence = {p.result_id for p in alert.evidence.results}
    rows = [
        (
            shown_at(p.collected_at, zone, year=True),
            f"{escape(p.count.comparator or '')}{p.count.value_10e9_per_l:g}",
            f"{escape(p.count.original_value)} {escape(p.count.original_unit)}",
            escape(p.status.value),
            escape(p.result_id),
            "evidence" if p.result_id in evidence else "earlier",
        )
        for p in points
    ]
    baseline = alert.evidence.baseline_10e9_per_l
    taken = alert.evidence.baseline_collected_at
    caption = f"Baseline {baseline:g} {UNIT}" if baseline is not None else ""
    caption += f", {shown_at(taken, zone, year=True)}" if caption and taken is not None else ""
    columns = ("Collected", UNIT, "As reported", "Status", "Result", "Part")
    return table(columns, rows, caption)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "") -> str:
    """A table that becomes one card per row on a phone, each cell labelled with its column;
    the cells are HTML, escaped by the caller."""
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{escape(column)}">{cell}</td>'
            for column, cell in zip(columns, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    caption = f"<caption>{escape(caption)}</caption>" if caption else ""
    head = f"{caption}<thead><tr>{head}</tr></thead>"
    return f'<table class="cards">{head}<tbody>{body}</tbody></table>'


def history_table(history: Sequence[Step], zone: tzinfo) -> str:
    """The paging history, its times in `zone`, to the second."""
    if not history:
        return "<p>Nobody paged yet.</p>"
    rows = [
        (
            shown_at(s.at, zone, year=True, seconds=True),
            escape(s.step),
            escape(s.recipient),
            escape(s.channel),
            escape(s.detail or ""),
        )
        for s in history
    ]
    return table(("When", "Step", "To", "Channel", "Detail"), rows)
