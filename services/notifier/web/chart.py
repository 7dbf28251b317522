"""The platelet trend chart of an alert page, as numbers for its SVG template. Pure.

Counts go on a logarithmic axis (1 to 1000 x10^9/L, where 5 and 15 are as far apart as 50 and
150), treatments as marked days, a corrected count as a hollow point. The lines are the limits
the alert was judged by (its rule's thresholds: critical and refractory); an alert raised before
alerts carried them draws only its evidence's limit, as the critical line, and one with neither
draws no line. Every point has a text title, and the chart a summary, for screen readers.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from schemas import EvidenceResult, PlateletAlert, ProcedureEvent, ResultStatus
from services.notifier.domain.message import UNIT
from services.notifier.wall_clock import shown_at, shown_on

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 400, 240, 40, 12, 16, 24  # phone-sized units
LOW, HIGH = 1.0, 1000.0  # x10^9/L, the axis range
TICKS = (1, 10, 100, 1000)


@dataclass(frozen=True)
class Line:
    """A horizontal limit: `kind` is critical or refractory."""

    kind: str
    y: float
    title: str


@dataclass(frozen=True)
class Treatment:
    x: float
    name: str
    title: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    classes: str
    title: str
    struck: bool  # a withdrawn alert's evidence: crossed out


@dataclass(frozen=True)
class Chart:
    ticks: tuple[tuple[float, str], ...]  # (y, label)
    first_day: str
    last_day: str
    lines: tuple[Line, ...]
    treatments: tuple[Treatment, ...]
    path: str | None  # the polyline through the points, when there are two or more
    points: tuple[Point, ...]
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM


def limits(alert: PlateletAlert) -> list[tuple[str, float]]:
    """The lines to draw, (kind, x10^9/L): the rule's thresholds; without them the evidence's
    limit as the critical line; without either, none."""
    thresholds = alert.rule.thresholds
    if thresholds is not None:
        return [
            ("critical", thresholds.critical_below_10e9_per_l),
            ("refractory", thresholds.refractory_below_10e9_per_l),
        ]
    limit = alert.evidence.limit_10e9_per_l
    return [("critical", limit)] if limit is not None else []


def chart(
    points: Sequence[EvidenceResult],
    alert: PlateletAlert,
    withdrawn: bool = False,
    *,
    zone: tzinfo,
) -> Chart:
    """The chart of `points` (at least one), dates in `zone`; the evidence of a withdrawn alert
    drawn as withdrawn (grey, crossed out)."""
    times = [p.collected_at for p in points]
    treated = [
        (t.performed_at if isinstance(t, ProcedureEvent) else t.started_at, t.name)
        for t in alert.evidence.treatments
    ]
    first = min([*times, *(at for at, _ in treated)])
    last = max([*times, *(at for at, _ in treated)])
    span = max((last - first).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (at - first).total_seconds() / span

    def y(value: float) -> float:
        clamped = min(max(value, LOW), HIGH)
        share = (math.log10(clamped) - math.log10(LOW)) / (math.log10(HIGH) - math.log10(LOW))
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - share)

    evidence = {p.result_id for p in alert.evidence.results}
    shown = []
    for p in points:
        corrected = p.status is not ResultStatus.FINAL
        struck = withdrawn and p.result_id in evidence
        marks = [p.status.value] * corrected + ["withdrawn"] * struck
        said = f" ({', '.join(marks)})" if marks else ""
        title = (
            f"{p.count.original_value} {p.count.original_unit} on "
            f"{shown_at(p.collected_at, zone, year=True)}{said}"
        )
        classes = "point" + " corrected" * corrected + " withdrawn" * struck
        shown.append(Point(x(p.collected_at), y(p.count.value_10e9_per_l), classes, title, struck))
    values = ", ".join(f"{p.count.value_10e9_per_l:g}" for p in points)
    summary = f"Platelet counts over time, oldest first: {values} {UNIT}"
    if withdrawn:
        summary += "; this alert was withdrawn and its counts no longer support it"
    return Chart(
        ticks=tuple((y(v), f"{v:g}") for v in TICKS),
        first_day=shown_on(first, zone, year=True),
        last_day=shown_on(last, zone, year=True),
        lines=tuple(Line(k, y(v), f"{k} ({v:g} {UNIT})") for k, v in limits(alert)),
        treatments=tuple(
            Treatment(x(at), name, f"{name} from {shown_on(at, zone, year=True)}")
            for at, name in treated
        ),
        path=" ".join(f"{p.x:.1f},{p.y:.1f}" for p in shown) if len(shown) > 1 else None,
        points=tuple(shown),
        summary=summary,
    )
