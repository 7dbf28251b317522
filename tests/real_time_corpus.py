"""Inputs as a hospital in Europe/Paris sends them: HL7 v2 ORU^R01 and FHIR with local times and
no UTC offset, read in the site's configured zone. Shared by the real-time tests (replay and the
live worker must agree on them)."""

import json
from datetime import UTC, datetime
from pathlib import Path

from schemas import LabResult, PlateletAlert, clinical_context_adapter
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.classifier.state import decode, encode
from services.config import Settings
from services.ingest import site
from services.ingest.codes import FeedContext
from services.ingest.fhir import read_fhir
from services.ingest.hl7v2.dispatch import read_message
from services.ingest.outcomes import Publish
from services.ingest.treatments import load_treatment_table
from services.tools.replay import Summary, replay

ZONE = "Europe/Paris"  # DST starts 2026-03-29 02:00 (+01:00 -> +02:00), ends 2026-10-25 03:00
RULES = load_rules()
TREATMENTS = load_treatment_table()
RECEIVED = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
STATE_LIMIT_BYTES = 1_000_000


def in_site_zone(settings: Settings) -> Settings:
    """`settings` reading times without an offset in Europe/Paris: the one place the tests name
    the setting."""
    return settings.model_copy(update={"local_timezone": ZONE})


def site_context() -> FeedContext:
    return site.site_context(in_site_zone(Settings()), RECEIVED)


def oru(mrn: str, filler: str, value: str, collected: str, status: str = "F") -> bytes:
    """One platelet count for patient `mrn` (authority GENHOSP), collected at `collected`
    (YYYYMMDDHHMM, local, no offset) in MSH-7, OBR-7 and OBX-14 alike."""
    control = f"{filler}-{status}-{value}"
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|GENHOSP|PW|PW|{collected}||ORU^R01^ORU_R01|{control}|P|2.5.1",
            f"PID|1||{mrn}^^^GENHOSP^MR||DOE^JANE||19700501|F",
            f"OBR|1|{filler}^EHR|{filler}^LAB|58410-2^CBC^LN|||{collected}"
            f"|||||||||||||||{collected}|||{status}",
            f"OBX|1|NM|777-3^Platelets^LN||{value}|10\\S\\9/L|150-400|L|||{status}|||{collected}",
        ]
    ).encode()


def ivig(mrn: str, administration: str, started: str) -> bytes:
    """A completed IVIG administration (FHIR MedicationAdministration, by brand name, given
    intravenously) started on `started` (YYYY-MM-DD: midnight in the site's zone; FHIR itself
    refuses a dateTime with a time and no offset)."""
    return json.dumps(
        {
            "resourceType": "MedicationAdministration",
            "id": administration,
            "status": "completed",
            "medicationCodeableConcept": {"text": "Privigen 1 g/kg"},
            "subject": {"identifier": {"system": "GENHOSP", "value": mrn}},
            "effectiveDateTime": started,
            "dosage": {"route": {"text": "intravenous"}},
        }
    ).encode()


def is_fhir(raw: bytes) -> bool:
    return raw.lstrip().startswith(b"{")


def write_inputs(inputs: list[bytes], directory: Path) -> list[Path]:
    """One file per input, in order, as `plateletwatch replay` takes them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, raw in enumerate(inputs):
        path = directory / f"{number:03d}.{'json' if is_fhir(raw) else 'hl7'}"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def replayed(inputs: list[bytes], directory: Path) -> list[PlateletAlert]:
    """The alerts `replay` raises over the inputs, read in the site's zone."""
    summary = Summary()
    paths = write_inputs(inputs, directory)
    alerts = list(replay(paths, RULES, TREATMENTS, site_context(), summary))
    assert not summary.rejected, summary.lines()
    return alerts


def ingested(raw: bytes) -> list[bytes]:
    """What ingest publishes for one input: each event as the JSON record Kafka carries."""
    if is_fhir(raw):
        outcomes = [entry.outcome for entry in read_fhir(raw, site_context(), TREATMENTS)]
    else:
        outcomes = list(read_message(raw, site_context(), TREATMENTS).outcomes)
    assert all(isinstance(o, Publish) for o in outcomes), outcomes
    return [o.event.model_dump_json().encode() for o in outcomes if isinstance(o, Publish)]


def through_the_worker(inputs: list[bytes], *, restart_each_event: bool) -> list[PlateletAlert]:
    """The live path without a broker: ingest's records decoded as the worker decodes them and
    applied to the patient's history, kept live or (`restart_each_event`) read back from its
    changelog record before every event, as after a restart."""
    records: dict[str, bytes] = {}
    live: dict[str, History] = {}
    alerts: list[PlateletAlert] = []
    for raw in inputs:
        for record in ingested(raw):
            event = (
                LabResult.model_validate_json(record)
                if b'"result_id"' in record
                else clinical_context_adapter.validate_json(record)
            )
            key = event.patient.identifier.key
            history = (
                decode(records[key])
                if restart_each_event and key in records
                else live.setdefault(key, History())
            )
            alerts += apply(history, event, RULES, datetime.now(UTC))
            records[key] = encode(history, STATE_LIMIT_BYTES)
            live[key] = history
    return alerts


def comparable(alert: PlateletAlert) -> tuple[object, ...]:
    """What must be the same whichever path raised the alert (not when it was raised)."""
    return (
        alert.alert_id,
        alert.kind.value,
        alert.value_10e9_per_l,
        tuple(r.result_id for r in alert.evidence.results),
        alert.withdraws_alert_id,
    )


def corpus() -> list[bytes]:
    """Three patients' inputs in arrival order, times without offsets around both changes: a
    suppressed repeat 23.5 h after a page and a late older count (spring); no response to IVIG a
    day apart in real time, then one of those counts corrected to a response (autumn);
    persistent-severe counts spanning 7 days in real time, then a late older one (autumn)."""
    first = [
        oru("RT-11", "C1", "12", "202603281200"),
        oru("RT-11", "C2", "14", "202603291230"),
        oru("RT-11", "C3", "11", "202603280800"),  # late: collected before the page
        oru("RT-11", "C4", "180", "202603301000"),
    ]
    second = [
        oru("RT-12", "C5", "25", "202610140800"),
        ivig("RT-12", "ivig-12", "2026-10-15"),
        oru("RT-12", "C6", "24", "202610241200"),
        oru("RT-12", "C7", "23", "202610251130"),
        oru("RT-12", "C7", "80", "202610251130", status="C"),  # 23 was wrong: 80, a response
    ]
    third = [
        oru("RT-13", "C8", "25", "202610201200"),
        oru("RT-13", "C9", "26", "202610231200"),
        oru("RT-13", "C10", "24", "202610271130"),
        oru("RT-13", "C11", "22", "202610190900"),  # late: before the run's first count
    ]
    stories = [first, second, third]
    return [s[i] for i in range(max(map(len, stories))) for s in stories if i < len(s)]
