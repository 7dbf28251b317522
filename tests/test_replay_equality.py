"""Replay over a generated, varied data set sends exactly the alerts it sent before the engine's
history was made compact (issue 17), and the worker's way (the history read back from its
changelog form before every event) sends the very same ones.

The data set has several years of counts for 150 patients in arrival order across patients:
critical episodes and repeats, late values, corrections, deletions and wrong-patient results,
preliminary results, comparators, panic flags, counts reported as integers or per microlitre,
smear estimates, courses of first-line therapy, splenectomies, transfusions, withdrawn
treatments, diagnoses, children turning 18, resent events, event ids that are not UUIDs, and a
patient with more counts than a history keeps. `replay_equality_alerts.txt` holds one line per
alert (patient, kind, alert id and a digest of the whole alert but its `raised_at`), written by the
engine before the change; `python -m tests.test_replay_equality` writes it again, for a change
that is meant to change alerts.
"""

import hashlib
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from schemas import (
    Coding,
    DiagnosisEvent,
    LabResult,
    MedicationEvent,
    Patient,
    PatientIdentifier,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    TransfusionEvent,
    TreatmentCategory,
    stable_event_id,
)
from services.classifier.engine import VALUES_KEPT, History, apply
from services.classifier.rules import load_rules
from services.ingest.reading import FeedContext, load_treatment_table
from services.tools.replay import Summary, replay

GOLDEN = Path(__file__).with_name("replay_equality_alerts.txt")
T0 = datetime(2024, 1, 1, 7, 0, tzinfo=UTC)
PLATELETS = Coding(system="http://loinc.org", code="777-3")
SMEAR = Coding(system="http://loinc.org", code="49497-1")
ITP = Coding(system="http://hl7.org/fhir/sid/icd-10", code="D69.3")
Event = LabResult | MedicationEvent | ProcedureEvent | TransfusionEvent | DiagnosisEvent


def _event_id(rng: random.Random, *identity: str) -> str:
    """Mostly what ingest makes (a UUID), sometimes an upper-case UUID or a sender's own id."""
    eid = stable_event_id(*identity)
    roll = rng.random()
    if roll < 0.03:
        return eid.upper()
    if roll < 0.06:
        return "E-" + "-".join(identity)[-40:]
    return eid


def _count(rng: random.Random, value: float) -> PlateletCount:
    """The count as a lab reports it: with a comparator, as an integer, per microlitre..."""
    roll = rng.random()
    if value < 10 and roll < 0.2:
        return PlateletCount(
            value_10e9_per_l=5, comparator="<", original_value="<5", original_unit="10*9/L"
        )
    if roll < 0.4:
        return PlateletCount(
            value_10e9_per_l=float(round(value)),
            original_value=str(round(value)),
            original_unit="10*3/uL",
        )
    if roll < 0.5:
        return PlateletCount(
            value_10e9_per_l=round(value),
            original_value=str(round(value) * 1000),
            original_unit="/uL",
        )
    return PlateletCount(
        value_10e9_per_l=round(value, 1), original_value=f"{value:.1f}", original_unit="10*9/L"
    )


def _patient_events(n: int, rng: random.Random) -> list[Event]:
    """One patient's events over up to three years, each with its arrival time."""
    child = n % 7 == 0
    born = T0.date() - timedelta(days=int(365.25 * 17.8)) if child else date(1950 + n % 50, 3, 9)
    patient = Patient(
        identifier=PatientIdentifier(authority="EQ", mrn=f"P{n:04d}"), birth_date=born
    )
    low = n % 3 == 0
    flood = n == 5
    events: list[Event] = []
    results: list[LabResult] = []
    if n % 4 == 0:
        events.append(
            DiagnosisEvent(
                event_id=_event_id(rng, "eq-dx", str(n)),
                source="json",
                patient=patient,
                diagnosis_id=f"DX{n}",
                codes=(ITP,),
                on_record=True,
                received_at=T0 + timedelta(days=rng.uniform(0, 200)),
            )
        )
    step_days = 0.05 if flood else rng.choice((2.0, 5.0, 9.0, 20.0))
    days = rng.uniform(0, 10)
    count = VALUES_KEPT + 80 if flood else int(rng.uniform(20, 1100 / step_days))
    for k in range(count):
        days += step_days * rng.uniform(0.5, 1.5)
        at = T0 + timedelta(days=days)
        phase = (k // 12) % 3
        value = (
            rng.choice((rng.uniform(2, 19), rng.uniform(20, 60), rng.uniform(60, 200)))
            if low and phase != 2
            else rng.uniform(140, 420)
        )
        rid = f"{patient.identifier.mrn}-{k}"
        status = ResultStatus.PRELIMINARY if rng.random() < 0.04 else ResultStatus.FINAL
        arrival = at + timedelta(hours=rng.choice((1, 1, 1, 2, 30, 200)))  # some arrive late
        result = LabResult(
            event_id=_event_id(rng, "eq", rid, status, str(value)),
            source="json",
            patient=patient,
            result_id=rid,
            code=SMEAR if rng.random() < 0.05 else PLATELETS,
            count=_count(rng, value),
            status=status,
            abnormal_flags=("LL",) if value < 40 and rng.random() < 0.3 else (),
            location=rng.choice((None, None, "HAEM-7", "ICU")),
            collected_at=at,
            verified_at=None if rng.random() < 0.1 else at + timedelta(minutes=35),
            received_at=arrival,
        )
        events.append(result)
        results.append(result)
        if rng.random() < 0.03:
            events.append(result)  # resent as it was
        if low and k % 10 == 3:
            events.extend(_therapy(n, k, patient, at, rng))
    for earlier in rng.sample(results, k=min(len(results), 4)):
        events.append(_changed(earlier, rng))
    return events


def _therapy(n: int, k: int, patient: Patient, at: datetime, rng: random.Random) -> list[Event]:
    category = rng.choice(
        (
            TreatmentCategory.CORTICOSTEROID,
            TreatmentCategory.IVIG,
            TreatmentCategory.PLATELET_TRANSFUSION,
            TreatmentCategory.RITUXIMAB,
            TreatmentCategory.SPLENECTOMY,
        )
    )
    start = at - timedelta(hours=rng.uniform(-48, 48))
    received = start + timedelta(hours=rng.choice((1, 50)))
    common = {
        "event_id": _event_id(rng, "eq-tx", str(n), str(k)),
        "source": "json",
        "patient": patient,
        "category": category,
        "name": category.value,
        "treatment_id": f"TX{n}-{k}",
        "on_record": True,
        "received_at": received,
    }
    given: Event
    if category is TreatmentCategory.SPLENECTOMY:
        given = ProcedureEvent(performed_at=start, **common)
    elif category is TreatmentCategory.PLATELET_TRANSFUSION:
        given = TransfusionEvent(started_at=start, **common)
    else:
        ended = start + timedelta(days=rng.choice((1, 4, 20)))
        given = MedicationEvent(started_at=start, ended_at=ended, **common)
    if rng.random() >= 0.1:
        return [given]
    withdrawn = given.model_copy(
        update={
            "event_id": _event_id(rng, "eq-tx-withdrawn", str(n), str(k)),
            "on_record": False,
            "received_at": received + timedelta(days=3),
        }
    )
    return [given, withdrawn]


def _changed(result: LabResult, rng: random.Random) -> LabResult:
    """A correction, a deletion or a wrong-patient notice for an earlier result, days later."""
    status = rng.choice(
        (ResultStatus.CORRECTED, ResultStatus.ENTERED_IN_ERROR, ResultStatus.WRONG_PATIENT)
    )
    count = None
    if status is ResultStatus.CORRECTED:
        count = _count(rng, rng.uniform(2, 300))
    return result.model_copy(
        update={
            "event_id": _event_id(rng, "eq-change", result.result_id, status),
            "result_id": result.result_id + "-c",
            "replaces_result_id": result.result_id,
            "count": count,
            "status": status,
            "received_at": result.received_at + timedelta(days=rng.uniform(0.5, 6)),
        }
    )


def events() -> list[Event]:
    rng = random.Random(17)
    every = [e for n in range(150) for e in _patient_events(n, rng)]
    return sorted(every, key=lambda e: e.received_at)  # stable: a resend follows its original


def fingerprint(alert: PlateletAlert) -> str:
    whole = alert.model_dump_json(exclude={"raised_at"})
    digest = hashlib.sha256(whole.encode()).hexdigest()[:16]
    return f"{alert.patient.identifier.mrn} {alert.kind.value} {alert.alert_id[:8]} {digest}"


def replayed(path: Path) -> list[str]:
    path.write_text("".join(e.model_dump_json() + "\n" for e in events()))
    context = FeedContext(received_at=T0, local_zone=UTC)
    summary = Summary()
    alerts = replay([path], load_rules(), load_treatment_table(), context, summary)
    return [fingerprint(a) for a in alerts]


def test_replay_sends_the_alerts_it_sent_before(tmp_path: Path) -> None:
    got = replayed(tmp_path / "events.ndjson")
    assert len(got) > 1000
    assert {line.split()[1] for line in got} >= {
        "critical_low",
        "refractory",
        "persistent_severe",
        "withdrawn",
    }
    assert got == GOLDEN.read_text().splitlines()


def test_the_worker_way_sends_the_same_alerts() -> None:
    """Each event applied to the history read back from its changelog form, as the worker
    recovering from a restart before every event would; for every fifth patient (the one with
    more counts than a history keeps among them), to keep the test short."""
    rules = load_rules()
    stored: dict[str, str] = {}
    got = []
    for event in events():
        key = event.patient.identifier.key
        if int(event.patient.identifier.mrn[1:]) % 5:
            continue
        history = History.from_json(json.loads(stored[key])) if key in stored else History()
        got += [fingerprint(a) for a in apply(history, event, rules, T0)]
        stored[key] = json.dumps(history.to_json())
    golden = GOLDEN.read_text().splitlines()
    assert got == [line for line in golden if int(line.split()[0][1:]) % 5 == 0]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        GOLDEN.write_text("".join(line + "\n" for line in replayed(Path(scratch) / "e.ndjson")))
