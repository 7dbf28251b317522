"""The alert page: the trend chart, the evidence, the paging history and the buttons."""

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from schemas import AckAction, AlertKind, PlateletAlert, ResultStatus, Thresholds
from services.notifier.store.tables import Closing
from services.notifier.web.views import Step, alert_page, closed_line, link_actions, trend_chart
from tests.alert_factory import DAY, NIGHT, count, persistent_severe
from tests.alert_factory import refractory as refractory_alert
from tests.conftest import unlabelled

BUTTONS = {action: f"/v1/links/{action.value}-token" for action in AckAction}
PARIS = ZoneInfo("Europe/Paris")


def refractory() -> PlateletAlert:
    """The baseline (25, 13 Nov) before prednisolone (14 Nov), then 18 and a corrected 21;
    judged by the adult limits, critical below 20 and refractory below 30."""
    alert = refractory_alert(evidence={"note": "first-line: prednisolone"})
    results = (count(18, NIGHT - DAY), count(21, NIGHT, "R@8", status=ResultStatus.CORRECTED))
    baseline = (count(25, NIGHT - 15 * DAY),)
    evidence = alert.evidence.model_copy(update={"results": results, "preceding": baseline})
    limits = Thresholds(critical_below_10e9_per_l=20, refractory_below_10e9_per_l=30)
    rule = alert.rule.model_copy(update={"thresholds": limits})
    return alert.model_copy(update={"evidence": evidence, "value_10e9_per_l": 21, "rule": rule})


def test_the_chart_has_a_point_per_count_the_limits_and_the_treatments() -> None:
    alert = refractory()
    chart = trend_chart([*alert.evidence.preceding, *alert.evidence.results], alert, zone=PARIS)
    assert chart.count('<circle class="point') == 3  # the baseline and two counts in evidence
    assert chart.count("corrected") == 2  # the corrected count: hollow, and said in its title
    assert "<title>critical (20 x10^9/L)</title>" in chart
    assert "<title>refractory (30 x10^9/L)</title>" in chart
    assert ">prednisolone from 14 Nov 2026</title>" in chart
    assert "<title>21 10*9/L on 28 Nov 2026 03:10 +01:00 (corrected)</title>" in chart
    assert ">13 Nov 2026</text>" in chart  # the axis starts on the baseline's local day
    assert 'aria-label="Platelet counts over time, oldest first: 25, 18, 21 x10^9/L"' in chart


def test_an_alert_without_thresholds_draws_its_evidence_limit_as_the_critical_line() -> None:
    """Alerts raised before rules version 2026-11-28.2 carry no thresholds."""
    older = refractory().model_copy(update={"rule": refractory_alert().rule})
    points = [*older.evidence.preceding, *older.evidence.results]
    chart = trend_chart(points, older, zone=UTC)
    assert "<title>critical (30 x10^9/L)</title>" in chart  # evidence.limit_10e9_per_l
    assert "refractory (" not in chart
    unlimited = older.model_copy(
        update={"evidence": older.evidence.model_copy(update={"limit_10e9_per_l": None})}
    )
    assert "<title>critical" not in trend_chart(points, unlimited, zone=UTC)


def test_lower_counts_are_drawn_lower_on_a_log_axis() -> None:
    alert = refractory()
    chart = trend_chart([*alert.evidence.preceding, *alert.evidence.results], alert, zone=UTC)
    heights = [float(y) for y in re.findall(r'<circle [^>]*cy="([\d.]+)"', chart)]
    assert heights[1] > heights[2] > heights[0]  # 18 lowest, then 21, then 25 (y grows down)


def test_the_page_shows_why_the_evidence_who_was_paged_and_three_buttons() -> None:
    alert = refractory()
    history = [
        Step(datetime(2026, 1, 9, 8, 5, tzinfo=UTC), "delivered", "adult/primary", "email", None)
    ]
    page = unlabelled(alert_page(alert, history, link_actions(BUTTONS), zone=PARIS))
    assert "Refractory thrombocytopenia" in page
    assert "first-line: prednisolone" in page  # the engine's note
    assert "Rule refractory, rules file" in page
    assert "<td>9 Jan 2026 09:05:00 +01:00</td><td>delivered</td>" in page
    assert "<td>adult/primary</td><td>email</td>" in page
    assert "<td>28 Nov 2026 03:10 +01:00</td><td>21</td>" in page  # the evidence table
    assert "2026-11-28" not in page
    assert re.findall(r'<form method="post" action="([^"]+)">', page) == list(BUTTONS.values())
    assert "<caption>Baseline 25 x10^9/L, 13 Nov 2026 03:10 +01:00</caption>" in page
    assert "<script" not in page


def test_nothing_from_the_feed_becomes_markup() -> None:
    alert = refractory()
    hostile = alert.model_copy(update={"location": '<img src=x onerror="alert(1)">'})
    page = alert_page(hostile, [], link_actions(BUTTONS), zone=UTC)
    assert "<img" not in page
    assert "&lt;img" in page


def test_a_persistent_severe_alert_is_named_for_what_was_measured() -> None:
    page = unlabelled(alert_page(persistent_severe(), [], "", zone=PARIS))
    assert "<h1>Platelets &lt; 30 for 7 days, no first-line therapy on record</h1>" in page
    assert "Persistent" not in page


def test_how_paging_ended_is_told_in_local_time_and_a_superseded_alert_is_not_withdrawn() -> None:
    at = datetime(2026, 11, 28, 2, 48, tzinfo=UTC)
    assert closed_line(Closing.ACKNOWLEDGED, "dr.ada", at, PARIS) == (
        "Acknowledged by dr.ada at 28 Nov 03:48 +01:00"
    )
    superseded = closed_line(Closing.SUPERSEDED, "classifier", at, PARIS)
    assert superseded.startswith("Superseded at 28 Nov 03:48 +01:00")
    assert "withdrawn" not in superseded.lower()
    gone = alert_page(
        refractory(),
        [],
        "",
        closed_line(Closing.WITHDRAWN, "classifier", at, PARIS),
        True,
        zone=PARIS,
    )
    assert "Withdrawn by classifier at 28 Nov 03:48 +01:00" in gone
    assert AlertKind.WITHDRAWN.value in gone  # its counts are drawn as withdrawn
