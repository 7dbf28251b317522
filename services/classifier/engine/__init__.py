"""The classifier's engine: one patient's history in, the alerts it warrants out. Pure.

history.py holds the patient's history, scans.py derives the alerts the rules warrant from it,
reconcile.py compares them with what was sent and builds the alerts; `apply` ties them together.

Every event updates the patient's history (values by collection time, treatments, alerts
raised). What the rules derive now is then compared with what was already sent:
- an alert derived and not sent pages;
- one sent and derived again with other evidence is re-sent under the same alert_id, which
  pages no one again (also when a run's start moved earlier: it keeps its id);
- a refractory alert takes over (supersedes) a persistent_severe one, which is closed quietly;
- one sent and no longer derived is withdrawn only when a value in its own evidence was
  corrected, deleted or posted to the wrong patient. A withdrawal tells everyone paged "that
  page was wrong"; anything else leaves the alert as it was.
Deriving from the history, not from arrival order, places late and corrected results where
they belong and makes the classifier worker and the offline replay agree. Arrival order matters in
one place, as the clinical rules say: a late value (collected before a value already received)
never triggers an alert and changes no repeat-paging decision; it is evidence for the rest.
Every time is a UTC instant (the event contract holds them so), so windows are real time.
"""

from collections.abc import Sequence
from datetime import datetime

from schemas import (
    ClinicalContextEvent,
    Correction,
    DiagnosisEvent,
    LabResult,
    PlateletAlert,
)
from services.classifier.engine.history import (
    DIAGNOSES_KEPT,
    TREATMENTS_KEPT,
    VALUES_KEPT,
    History,
    forget_beyond_horizon,
    record_result,
    record_treatment,
    shrink,
)
from services.classifier.engine.reconcile import reconcile
from services.classifier.engine.scans import Scans
from services.classifier.rules import Rules

# The public API: the worker, the state codec, replay and the tests import these.
__all__ = ["DIAGNOSES_KEPT", "TREATMENTS_KEPT", "VALUES_KEPT", "History", "apply", "shrink"]


def apply(
    history: History, event: LabResult | ClinicalContextEvent, rules: Rules, now: datetime
) -> Sequence[PlateletAlert]:
    """Add one event to the patient's history and return the alerts it causes (often none).

    Idempotent: an event already applied changes nothing and returns nothing.
    """
    scans = history.scans
    if scans is None and isinstance(event, LabResult) and history.is_new():
        # A new patient's first result: scanning it in one step is what the full path does.
        history.patient_key = event.patient.identifier.key
        scans = history.scans = Scans(history, rules, [])
    if (
        scans is not None
        and scans.rules is rules
        and isinstance(event, LabResult)
        and (history.seen is None or event.event_id not in history.seen)
    ):  # not applied before unless its value is held, which add_newest checks
        new = scans.add_newest(history, event)
        if new is not None:
            if event.location is not None:
                history.location = event.location
            if not new:
                return ()  # the common case: no list to allocate
            wanted = {w.alert_id: w for w in new}
            return reconcile(history, event.patient, wanted, rules, now, {}, complete=False)
    if history.has_applied(event):
        return ()
    if isinstance(event, LabResult) and event.location is not None:
        history.location = event.location
    history.patient_key = event.patient.identifier.key  # the first event always comes here
    corrections: dict[str, Correction] = {}
    if isinstance(event, LabResult):
        corrections = record_result(history, event, rules)
    elif isinstance(event, DiagnosisEvent):
        history.diagnoses.pop(event.diagnosis_id, None)
        if event.on_record:
            history.diagnoses[event.diagnosis_id] = event
            if len(history.diagnoses) > DIAGNOSES_KEPT:  # the longest known go first
                del history.diagnoses[next(iter(history.diagnoses))]
    else:
        record_treatment(history, event)
    if not history.has_applied(event):
        history.remember(event.event_id)
    forget_beyond_horizon(history, rules)
    history.scans = Scans(history, rules, history.values.in_order())
    history.suppressed_repeats = history.scans.critical.suppressed
    history.late_values = history.scans.critical.late
    wanted = history.scans.wanted
    return reconcile(history, event.patient, wanted, rules, now, corrections, complete=True)
