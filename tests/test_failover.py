"""Scale-out and failover on a three-node Apache Kafka cluster (RF 3, min.insync.replicas 2):
three classifier workers and two notifiers on one PostgreSQL store; the leader broker of
lab.results.v1[0], then a classifier worker, then a notifier are SIGKILLed while a lab sends
critical results. Every patient must be paged, nobody twice, and a second count after the
classifier kill must find the patient's open episode (`chaos.failover`).

Skipped, saying why, where java, the Kafka jars or PostgreSQL's server are missing.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.failover import FailoverPlan, paged_again, recovery_seconds, run_failover
from chaos.lab import mrn
from services.kafka.apache_kafka import LocalApacheKafka, unavailable_reason
from services.notifier.delivery.channels.webhook_receiver import ReceivedPage
from tests.postgres_server import find_binaries

needs_cluster = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"Apache Kafka unavailable: {unavailable_reason()}"
)
needs_postgres = pytest.mark.skipif(
    find_binaries() is None, reason="no PostgreSQL server binaries: `make tools` installs them"
)


def test_recovery_is_the_longest_wait_from_the_kill_or_acceptance() -> None:
    accepted = {0: 1.0, 1: 9.0, 2: 12.0, 3: 25.0}
    paged = {mrn(0): 2.0, mrn(1): 16.0, mrn(2): 13.0, mrn(3): 26.0}
    # patient 0 was paged before the kill at 10; 1 waited from 10 to 16; 2 from 12 to 13;
    # 3 was accepted after the next kill at 20.
    assert recovery_seconds(accepted, paged, killed_at=10.0, next_kill_at=20.0) == 6.0
    assert recovery_seconds(accepted, paged, killed_at=30.0, next_kill_at=40.0) is None


def _page(alert_id: str, patient: int, kind: str = "critical_low") -> ReceivedPage:
    alert = {"alert_id": alert_id, "kind": kind, "patient": {"identifier": {"mrn": mrn(patient)}}}
    return ReceivedPage("/pages", {"Idempotency-Key": alert_id}, {"alert": alert}, b"", 0.0)


def test_a_second_critical_alert_in_the_open_episode_is_a_forgotten_history() -> None:
    pages = [
        _page("a0", 0),
        _page("a0", 0),  # the same alert twice: a duplicate (or a resend), not a second alert
        _page("a1", 1),
        _page("b1", 1),  # a new critical alert for a patient whose episode was open
        _page("a2", 2),
        _page("w2", 2, kind="withdrawn"),
    ]
    assert paged_again(pages, [0, 1, 2]) == [1]


@pytest.fixture
def cluster() -> Iterator[LocalApacheKafka]:
    kafka = LocalApacheKafka(nodes=3)
    kafka.start(timeout=120)
    try:
        yield kafka
    finally:
        kafka.stop()


@needs_cluster
@needs_postgres
@pytest.mark.integration
@pytest.mark.chaos
def test_leader_broker_classifier_and_notifier_killed_lose_no_patient_and_page_nobody_twice(
    cluster: LocalApacheKafka, postgres_server: str, tmp_path: Path
) -> None:
    results = run_failover(FailoverPlan(patients=60), cluster, postgres_server, tmp_path)
    results.write(tmp_path / "failover-results.json")
    figures = results.figures()
    print(figures)
    assert set(results.killed) == {"broker", "classifier", "notifier"}, figures
    assert results.leader_elected_seconds is not None, figures
    # The killed worker's partitions were taken over with their histories, read from the
    # changelog by the survivors.
    assert any(read["patients"] > 0 for read in results.changelog_handover), figures
    assert results.second_counts > 0, figures
    assert results.paged_again == [], figures
    assert results.lost_patients == [], figures
    assert results.duplicates == [], figures
