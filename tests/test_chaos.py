"""A short `make chaos`: services SIGKILLed again and again while a lab sends critical results;
every patient must be paged, and nobody paged twice for the same alert.

The full run is `make chaos` (20 kills of each service, 500 patients); this one keeps `make test`
within a few minutes. The services run as separate processes against the session's broker.
Every patient must be paged, always; a page sent twice after a notifier kill is a known notifier
defect (NOTIFIER_RESENDS) and marks the run xfail, with the figures, rather than failing it.
"""

from pathlib import Path

import pytest

from chaos.harness import Plan, duplicate_pages, lost_patients, run_chaos
from chaos.lab import mrn
from services.kafka.broker import Broker
from services.notifier.channels.webhook_receiver import ReceivedPage

PATIENTS = 100
# Seen in 2 of 60 notifier kills under `make chaos` (the audit trail shows "sent", no outcome,
# then "sent" and "delivered" two minutes later): a notifier SIGKILLed after the webhook took a
# page but before the page was marked delivered sends it again once its claim on the page lapses.
NOTIFIER_RESENDS = "notifier: a page taken by the webhook just before a SIGKILL is sent again"


def _page(path: str, alert_id: str, patient: int, kind: str = "critical_low") -> ReceivedPage:
    identifier = {"authority": "urn:oid:2.16.840.1.113883.19.5", "mrn": mrn(patient)}
    alert = {"alert_id": alert_id, "kind": kind, "patient": {"identifier": identifier}}
    return ReceivedPage(path, {}, {"alert": alert}, b"")


def test_a_duplicate_is_the_same_alert_paged_twice_to_the_same_recipient() -> None:
    pages = [
        _page("/pages", "a1", 0),
        _page("/pages", "a1", 0),  # resent after a restart: the on-call doctor's pager goes twice
        _page("/secondary", "a1", 0),  # escalated to the next tier: not a duplicate
        _page("/pages", "a2", 1),
        _page("/pages", "a2", 1, kind="withdrawn"),
    ]
    assert duplicate_pages(pages) == ["a1"]
    assert lost_patients(pages, 3) == [2]


def test_the_seed_fixes_the_schedule_within_its_bounds() -> None:
    plan = Plan(patients=1, kills={"ingest": 4, "classifier": 0, "notifier": 20}, seed=7)
    schedule = plan.schedule()
    assert schedule == Plan(patients=1, kills=plan.kills, seed=7).schedule()
    assert schedule != Plan(patients=1, kills=plan.kills, seed=8).schedule()
    assert [len(kills) for kills in schedule.values()] == [4, 0, 20]
    assert all(2 <= up <= 6 and 1 <= down <= 5 for kills in schedule.values() for up, down in kills)


def _assert_every_patient_paged_once(plan: Plan, broker: Broker, workdir: Path) -> None:
    results = run_chaos(plan, workdir, broker)
    results.write(workdir / "chaos-results.json")
    figures = results.figures()
    assert results.kills == plan.kills, figures
    assert results.lost_patients == [], figures
    if results.duplicates and plan.kills.get("notifier"):
        pytest.xfail(f"{NOTIFIER_RESENDS}: {figures}")
    assert results.duplicates == [], figures


@pytest.mark.integration
@pytest.mark.chaos
def test_ingest_and_notifier_killed_repeatedly_lose_no_patient_and_page_nobody_twice(
    broker: Broker, tmp_path: Path
) -> None:
    plan = Plan(patients=PATIENTS, kills={"ingest": 3, "classifier": 0, "notifier": 3}, seed=12)
    _assert_every_patient_paged_once(plan, broker, tmp_path)


@pytest.mark.integration
@pytest.mark.chaos
def test_the_classifier_killed_repeatedly_loses_no_patient_and_pages_nobody_twice(
    broker: Broker, tmp_path: Path
) -> None:
    kills = {"ingest": 2, "classifier": 5, "notifier": 2}
    plan = Plan(patients=PATIENTS, kills=kills, seed=12, ready_within_seconds=60)
    _assert_every_patient_paged_once(plan, broker, tmp_path)
