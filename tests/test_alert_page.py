"""The alert page: the trend chart, the evidence, the paging history and the buttons."""

import re
from datetime import UTC, datetime

from schemas import AckAction, PlateletAlert, ResultStatus, TreatmentCategory
from services.notifier.alert_page import Step, alert_page, link_actions, trend_chart
from tests.conftest import unlabelled
from tests.test_engine import feed, result, treatment

BUTTONS = {action: f"/v1/links/{action.value}-token" for action in AckAction}


def refractory() -> PlateletAlert:
    _, alerts = feed(
        result(25, days=-1),
        treatment(TreatmentCategory.CORTICOSTEROID, 0, "prednisolone"),
        result(18, days=7),
        result(21, days=8, status=ResultStatus.CORRECTED, result_id="R@8"),
    )
    (alert,) = [a for batch in alerts for a in batch if a.kind.value == "refractory"]
    return alert


def test_the_chart_has_a_point_per_count_the_limits_and_the_treatments() -> None:
    alert = refractory()
    chart = trend_chart([*alert.evidence.preceding, *alert.evidence.results], alert)
    assert chart.count('<circle class="point') == 3  # the baseline and two counts in evidence
    assert chart.count("corrected") == 2  # the corrected count: hollow, and said in its title
    assert "<title>critical (20 x10^9/L)</title>" in chart
    assert "<title>30 (30 x10^9/L)</title>" in chart
    assert ">prednisolone from 2026-01-01</title>" in chart
    assert 'aria-label="Platelet counts over time, oldest first: 25, 18, 21 x10^9/L"' in chart


def test_lower_counts_are_drawn_lower_on_a_log_axis() -> None:
    alert = refractory()
    chart = trend_chart([*alert.evidence.preceding, *alert.evidence.results], alert)
    heights = [float(y) for y in re.findall(r'<circle [^>]*cy="([\d.]+)"', chart)]
    assert heights[1] > heights[2] > heights[0]  # 18 lowest, then 21, then 25 (y grows down)


def test_the_page_shows_why_the_evidence_who_was_paged_and_three_buttons() -> None:
    alert = refractory()
    history = [
        Step(datetime(2026, 1, 9, 8, 5, tzinfo=UTC), "delivered", "adult/primary", "email", None)
    ]
    page = unlabelled(alert_page(alert, history, link_actions(BUTTONS)))
    assert "Refractory thrombocytopenia" in page
    assert "first-line: prednisolone" in page  # the engine's note
    assert "Rule refractory, rules file" in page
    assert "<td>adult/primary</td><td>email</td>" in page
    assert re.findall(r'<form method="post" action="([^"]+)">', page) == list(BUTTONS.values())
    assert "<caption>Baseline 25 x10^9/L</caption>" in page
    assert "<script" not in page


def test_nothing_from_the_feed_becomes_markup() -> None:
    alert = refractory()
    hostile = alert.model_copy(update={"location": '<img src=x onerror="alert(1)">'})
    page = alert_page(hostile, [], link_actions(BUTTONS))
    assert "<img" not in page
    assert "&lt;img" in page
