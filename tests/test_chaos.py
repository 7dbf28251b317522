"""A short `make chaos`: services SIGKILLed again and again while a lab sends critical results;
every patient must be paged, and nobody paged twice for the same alert.

The full run is `make chaos` (20 kills of each service, 500 patients); this one keeps `make test`
within a few minutes. The services run as separate processes against the session's broker.
A page is delivered at least once: one sent again with its Idempotency-Key after a notifier kill
cut its first sending short is counted apart (`resent`); any other repeat fails the run.
"""

from pathlib import Path

import pytest

from chaos.harness import Plan, lost_patients, repeated_pages, run_chaos
from chaos.lab import mrn
from services.kafka.broker import Broker
from services.notifier.delivery.channels.webhook_receiver import ReceivedPage

PATIENTS = 100


def _page(
    path: str, alert_id: str, patient: int, kind: str = "critical_low", at: float = 0.0
) -> ReceivedPage:
    identifier = {"authority": "urn:oid:2.16.840.1.113883.19.5", "mrn": mrn(patient)}
    alert = {"alert_id": alert_id, "kind": kind, "patient": {"identifier": identifier}}
    return ReceivedPage(path, {"Idempotency-Key": alert_id}, {"alert": alert}, b"", at)


def test_a_duplicate_is_the_same_alert_paged_twice_to_the_same_recipient() -> None:
    pages = [
        _page("/pages", "a1", 0),
        _page("/pages", "a1", 0),  # resent after a restart: the on-call doctor's pager goes twice
        _page("/secondary", "a1", 0),  # escalated to the next tier: not a duplicate
        _page("/pages", "a2", 1),
        _page("/pages", "a2", 1, kind="withdrawn"),
    ]
    assert repeated_pages(pages, notifier_killed_at=[]) == (["a1"], [])
    assert lost_patients(pages, 3) == [2]


def test_a_page_resent_with_its_key_across_a_notifier_kill_is_told_apart() -> None:
    first, again = _page("/pages", "a1", 0, at=10.0), _page("/pages", "a1", 0, at=130.0)
    assert repeated_pages([first, again], notifier_killed_at=[10.2]) == ([], ["a1"])
    assert repeated_pages([first, again], notifier_killed_at=[9.0, 60.0]) == (["a1"], [])
    keyless = ReceivedPage(again.path, {}, again.body, b"", again.received_at)
    assert repeated_pages([first, keyless], notifier_killed_at=[10.2]) == (["a1"], [])


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
    assert results.duplicates == [], figures


@pytest.mark.integration
@pytest.mark.chaos
def test_every_service_killed_repeatedly_loses_no_patient_and_pages_nobody_twice(
    broker: Broker, tmp_path: Path
) -> None:
    kills = {"ingest": 2, "classifier": 5, "notifier": 2}
    plan = Plan(patients=PATIENTS, kills=kills, seed=12, ready_within_seconds=60)
    _assert_every_patient_paged_once(plan, broker, tmp_path)
