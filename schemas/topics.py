"""Topic names are part of the contract: they carry a version suffix and every one is keyed by
patient (assigning authority + MRN), except ingest's dead-letter topic, whose inputs may have
none.

The classifier's state changelog is named here too, so that `plateletwatch topics` can create it
before any worker starts: it must have
exactly as many partitions as the topics that feed it (a patient's record lives on the partition
of their events). The changelog keeps the name faust gave its table's, so a deployment upgraded
from the faust table keeps its patients' histories.
"""

from enum import StrEnum


class Topic(StrEnum):
    LAB_RESULTS = "lab.results.v1"
    CLINICAL_CONTEXT = "clinical.context.v1"
    PLATELET_ALERTS = "platelet.alerts.v1"
    NOTIFIER_DELIVERIES = "notifier.deliveries.v1"
    INGEST_DEADLETTER = "ingest.deadletter.v1"
    CLASSIFIER_DEADLETTER = "classifier.deadletter.v1"


PATIENT_STATE_TABLE = "patient-state"


def changelog_topic(app_id: str, table: str) -> str:
    """<app id>-<table>-changelog, as faust named a table's changelog."""
    return f"{app_id}-{table}-changelog"
