"""The console's pages, pure: which alerts the board shows and in what order, what each row
says, the audit trail, and withdrawn counts on the chart."""

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas import AlertKind, Patient, PatientIdentifier, PlateletAlert, stable_event_id
from services.notifier.web.views import (
    Level,
    OpenAlert,
    Step,
    alert_page,
    audit_page,
    board_order,
    board_page,
    console_actions,
)
from tests.alert_factory import alert as built
from tests.alert_factory import count, persistent_severe
from tests.conftest import unlabelled

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PARIS = ZoneInfo("Europe/Paris")


def critical(mrn: str, born: date = date(1970, 1, 1)) -> PlateletAlert:
    patient = Patient(identifier=PatientIdentifier(authority="H", mrn=mrn), birth_date=born)
    population = "paediatric" if born.year > NOW.year - 18 else "adult"
    return built(
        AlertKind.CRITICAL_LOW,
        [count(9, NOW - 30 * MINUTE)],
        stable_event_id("critical", mrn),  # opaque, as the classifier's
        patient,
        population=population,
    )


def persistent(mrn: str) -> PlateletAlert:
    patient = Patient(identifier=PatientIdentifier(authority="H", mrn=mrn))
    return persistent_severe(stable_event_id("persistent", mrn), patient=patient)


def opened(
    alert: PlateletAlert,
    minutes_ago: int,
    paged: int = 1,
    acknowledged_by: str | None = None,
    acknowledged_at: datetime | None = None,
) -> OpenAlert:
    start = NOW - minutes_ago * MINUTE
    levels = tuple(
        Level(n, tier, start + 10 * n * MINUTE, "paged" if n < paged else "pending")
        for n, tier in enumerate(("primary", "secondary", "attending", "fallback"))
    )
    service = alert.population or "adult"
    return OpenAlert(alert, service, levels, acknowledged_by, acknowledged_at)


def test_the_board_shows_the_oldest_unacknowledged_first_then_the_acknowledged() -> None:
    newer, older = opened(critical("1"), 5), opened(critical("2"), 25, paged=3)
    taken_early = opened(
        critical("3"), 60, acknowledged_by="dr.a", acknowledged_at=NOW - 50 * MINUTE
    )
    taken_late = opened(critical("4"), 40, acknowledged_by="dr.b", acknowledged_at=NOW - MINUTE)
    child = opened(critical("5", born=date(2020, 1, 1)), 90)
    slow = opened(persistent("6"), 100)
    everything = [newer, taken_early, child, older, taken_late, slow]
    assert board_order(everything, ("adult",), None) == [
        slow, older, newer, taken_late, taken_early
    ]  # fmt: skip
    assert board_order(everything, ("paediatric",), None) == [child]
    assert board_order(everything, ("adult",), AlertKind.PERSISTENT_SEVERE) == [slow]


def test_a_board_row_says_level_paged_and_time_to_the_next_escalation() -> None:
    waiting = opened(critical("1"), 3)  # primary paged 3 min ago, secondary due in 7
    exhausted = opened(critical("2"), 45, paged=4)
    overdue = opened(critical("4"), 12)  # the escalation loop has not caught up yet
    acked = opened(critical("3"), 9, acknowledged_by="dr.a", acknowledged_at=NOW - MINUTE)
    page = unlabelled(
        board_page("dr.a", [waiting, exhausted, acked, overdue], None, NOW, "tok", 30, zone=PARIS)
    )
    rows = re.findall(r"<tr><td.*?</tr>", page)
    assert len(rows) == 4
    assert "secondary due now" in rows[3]
    assert "(under 1 min ago)" in board_page(
        "dr.a", [opened(critical("5"), 0)], None, NOW, "", 1, zone=UTC
    )
    assert "26 Nov 09:57 +01:00 (3 min ago)" in rows[0]  # waiting since, in local time
    assert "updated 10:00:00 +01:00" in page
    assert "level 0: primary" in rows[0]
    assert "secondary in 7 min" in rows[0]
    assert "Not acknowledged" in rows[0]
    assert "level 3: fallback" in rows[1]
    assert "none left: chain exhausted" in rows[1]
    assert "Acknowledged by dr.a" in rows[2]
    assert "stopped" in rows[2]
    assert "3 waiting for acknowledgement" in page
    assert 'data-refresh-seconds="30"' in page
    assert 'name="csrf_token" value="tok"' in page
    assert '<script src="/v1/console.js" defer></script>' in page
    assert "<script>" not in page  # no inline script: the CSP allows none


def test_the_kind_filter_keeps_its_choice_and_the_refresh_keeps_the_filter() -> None:
    page = board_page("dr.a", [], AlertKind.REFRACTORY, NOW, "tok", 30, zone=UTC)
    assert '<option value="refractory" selected>' in page
    assert 'data-source="/v1/console?kind=refractory"' in page
    assert "No open alerts." in page


def test_the_audit_page_lists_every_step_and_the_chain() -> None:
    alert = critical("1")
    trail = [
        Step(NOW, "sent", "adult/primary", "webhook", None),
        Step(NOW, "failed", "adult/primary", "webhook", "HTTP 503"),
        Step(NOW + MINUTE, "delivered", "adult/primary", "webhook", None),
        Step(NOW + 10 * MINUTE, "withdrawn", "classifier", "", "result R@0 was corrected"),
    ]
    page = unlabelled(audit_page(alert, trail, opened(alert, 0).levels, zone=PARIS))
    assert page.count("<td>adult/primary</td>") == 3
    assert "HTTP 503" in page
    assert "result R@0 was corrected" in page
    assert "<td>26 Nov 2026 10:01:00 +01:00</td><td>delivered</td>" in page
    assert "<td>0</td><td>primary</td><td>26 Nov 2026 10:00:00 +01:00</td>" in page
    assert re.findall(r"<tr><td>(\d)</td><td>(\w+)</td>", page) == [
        ("0", "primary"), ("1", "secondary"), ("2", "attending"), ("3", "fallback")
    ]  # fmt: skip


def test_a_withdrawn_alerts_counts_are_crossed_out_and_it_offers_no_buttons() -> None:
    alert = persistent("1")
    shown = alert_page(alert, [], console_actions(alert.alert_id, "tok"), zone=UTC)
    assert shown.count("<form") == 3
    assert shown.count('name="csrf_token" value="tok"') == 3
    assert 'name="reassign_to"' in shown
    assert "withdrawn" not in shown
    gone = alert_page(
        alert, [], console_actions(alert.alert_id, "tok"), "Paging ended", withdrawn=True, zone=UTC
    )
    assert "<form" not in gone
    assert gone.count('class="point withdrawn"') == 3 == gone.count('class="cross"')
    assert "this alert was withdrawn" in gone


def test_the_birth_date_is_shown_only_where_the_deployment_allows_it() -> None:
    alert = critical("1", born=date(1971, 2, 3))
    board = [opened(alert, 3)]
    for shown in (
        alert_page(alert, [], "", birth_date_shown=True, zone=UTC),
        board_page("dr.a", board, None, NOW, "tok", 30, birth_date_shown=True, zone=UTC),
    ):
        assert "H|1, born 1971-02-03" in shown
    for hidden in (
        alert_page(alert, [], "", zone=UTC),
        board_page("dr.a", board, None, NOW, "tok", 30, zone=UTC),
    ):
        assert "H|1" in hidden
        assert "1971" not in hidden


def test_no_page_title_names_the_patient() -> None:
    """Titles land in browser history and tab lists: the kind and the opaque alert id only."""
    alert = critical("MRN-IN-TITLE")
    withdrawn = alert.model_copy(
        update={"kind": AlertKind.WITHDRAWN, "withdrawal_reason": "entered in error"}
    )
    board = [opened(alert, 5)]
    pages = [
        alert_page(alert, [], console_actions(alert.alert_id, "csrf"), zone=UTC),
        alert_page(withdrawn, [], "", "Withdrawn", withdrawn=True, zone=UTC),
        audit_page(alert, [], [], zone=UTC),
        board_page("dr.a", board, None, NOW, "csrf", 30, zone=UTC),
    ]
    titles = [re.findall(r"<title>([^<]*)</title>", page)[0] for page in pages]
    assert not [title for title in titles if "MRN-IN-TITLE" in title]
    assert titles[0] == f"PlateletWatch: critical_low, alert {alert.alert_id}"
    assert "MRN-IN-TITLE" in unlabelled(pages[0])  # the page itself still names the patient


def test_the_board_names_a_persistent_severe_alert_for_what_was_measured() -> None:
    page = unlabelled(
        board_page("dr.a", [opened(persistent("6"), 100)], None, NOW, "t", 30, zone=UTC)
    )
    assert "Platelets &lt; 30 for 7 days</a>" in page
    assert "Persistent" not in page
