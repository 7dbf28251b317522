"""Topic names are part of the contract: they carry a version suffix and every one is keyed by
patient (assigning authority + MRN), except ingest's dead-letter topic, whose inputs may have
none."""

from enum import StrEnum


class Topic(StrEnum):
    LAB_RESULTS = "lab.results.v1"
    CLINICAL_CONTEXT = "clinical.context.v1"
    PLATELET_ALERTS = "platelet.alerts.v1"
    NOTIFIER_DELIVERIES = "notifier.deliveries.v1"
    INGEST_DEADLETTER = "ingest.deadletter.v1"
    CLASSIFIER_DEADLETTER = "classifier.deadletter.v1"
