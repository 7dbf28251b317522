"""A short `make chaos`: services SIGKILLed again and again while a lab sends critical results;
every patient must be paged, and nobody paged twice for the same alert.

The full run is `make chaos` (20 kills of each service, 500 patients); this one keeps `make test`
within a few minutes. The services run as separate processes against the session's broker.
"""

from pathlib import Path

import pytest

from chaos.harness import Plan, run_chaos
from services.kafka.broker import Broker

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PATIENTS = 100


def _assert_every_patient_paged_once(plan: Plan, broker: Broker, workdir: Path) -> None:
    results = run_chaos(plan, workdir, broker)
    results.write(workdir / "chaos-results.json")
    figures = results.figures()
    assert results.kills == plan.kills, figures
    assert results.lost_patients == [], figures
    assert results.duplicates == 0, figures


def test_ingest_and_notifier_killed_repeatedly_lose_no_patient_and_page_nobody_twice(
    broker: Broker, tmp_path: Path
) -> None:
    plan = Plan(patients=PATIENTS, kills={"ingest": 3, "classifier": 0, "notifier": 3}, seed=12)
    _assert_every_patient_paged_once(plan, broker, tmp_path)


@pytest.mark.xfail(reason="classifier recovery: lead's branch", strict=False)
def test_the_classifier_killed_repeatedly_loses_no_patient_and_pages_nobody_twice(
    broker: Broker, tmp_path: Path
) -> None:
    kills = {"ingest": 2, "classifier": 5, "notifier": 2}
    plan = Plan(patients=PATIENTS, kills=kills, seed=12, ready_within_seconds=60)
    _assert_every_patient_paged_once(plan, broker, tmp_path)
