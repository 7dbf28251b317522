"""HL7 v2 pharmacy administrations (RAS^O17, RDS^O13) to treatment-context outcomes. Pure.

dispatch.read_message checks MSH and hands these messages to `read_administrations`.

Each RXA (an administration) becomes one outcome, read as the FHIR feed reads a
MedicationAdministration: a treatment the table recognises in RXA-5 is published as a
MedicationEvent (a TransfusionEvent for a platelet product) stamped with the table's line of
therapy; anything else is filtered. It is filtered too, with the reason, when it was not given
(RXA-20 RE refused, NA not administered) and when the route is not systemic: eye drops,
inhalers, creams and ear drops are not ITP therapy. When RXA-21 deletes it (D), the event
withdraws the earlier record of the same administration (on_record false, same treatment_id).
A recognised treatment is refused (ERR naming the field) for a completion status not in table
0322, no patient (PID-3), or no readable start of administration (RXA-3). RDS^O13 is a
dispense: an RXD without an RXA is filtered, for a dispensed drug was not yet given.

The route is the RXR after the RXA, else the one of the order (RXO/RXE) before it, read by HL7
table 0162 and, for a code outside it, by the treatment table's local routes as the FHIR feed
reads dosage.route; a route neither knows, or no RXR at all, is kept (as FHIR keeps it).
"""

import math
import re
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from schemas import Coding, Dose, MedicationEvent, Patient, TransfusionEvent, stable_event_id
from services.ingest.codes import FeedContext
from services.ingest.hl7v2.fields import no_patient, read_patient, refusing_bad_fields
from services.ingest.hl7v2.message import Hl7Message, Segment
from services.ingest.outcomes import (
    FieldRefused,
    Filter,
    Outcome,
    Publish,
    RejectReason,
    field_rejection,
)
from services.ingest.times import ImplausibleTimeError, parse_hl7_timestamp
from services.ingest.treatments import Recognised, TreatmentTable, canonical_system

ROUTE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0162"
_ROUTE_SYSTEM_NAMES = frozenset({"", "HL70162", "HL7 0162", "0162", ROUTE_SYSTEM.upper()})
_MAX_DOSE_VALUE = 1e9  # as the FHIR feed: beyond any dose in any unit

# HL7 table 0322 completion status; empty means complete (v2.5 4A.7.1.20).
_GIVEN = frozenset({"CP", "PA", ""})
_NOT_GIVEN = {"RE": "refused", "NA": "not administered"}

# HL7 table 0162, every code: systemic routes (the drug reaches the whole body) with their names,
# and the others with the name a filter gives. Intraocular (IO) is not intraosseous.
SYSTEMIC_ROUTES = {
    "PO": "Oral",
    "IV": "Intravenous",
    "IM": "Intramuscular",
    "SC": "Subcutaneous",
    "SL": "Sublingual",
    "TL": "Translingual",
    "B": "Buccal",
    "NG": "Nasogastric",
    "GTT": "Gastrostomy tube",
    "IA": "Intra-arterial",
    "IC": "Intracardiac",
}
NON_SYSTEMIC_ROUTES = {
    "OP": "ophthalmic",
    "IO": "intraocular",
    "OT": "otic",
    "TP": "topical",
    "AP": "applied externally",
    "TD": "transdermal",
    "IH": "inhalation",
    "RM": "rebreather mask",
    "VM": "ventimask",
    "NP": "nasal prongs",
    "NS": "nasal",
    "IN": "intranasal",
    "NT": "nasotracheal tube",
    "ET": "endotracheal tube",
    "TRA": "tracheostomy",
    "DT": "dental",
    "MTH": "mouth/throat",
    "MM": "mucous membrane",
    "ID": "intradermal",
    "EP": "epidural",
    "IT": "intrathecal",
    "IS": "intrasynovial",
    "IB": "intrabursal",
    "IP": "intraperitoneal",
    "IHA": "intrahepatic artery",
    "PF": "perfusion",
    "PR": "rectal",
    "VG": "vaginal",
    "UR": "urethral",
    "GU": "GU irrigant",
    "ICV": "intracervical",
    "IU": "intrauterine",
    "IMR": "immersion",
    "SD": "soaked dressing",
    "WND": "wound",
    "OTH": "other or unknown",
}


@dataclass(frozen=True)
class _Administration:
    """One RXA with what it is read against: its patient, order, and routes."""

    position: int
    pid: Segment | None
    orc: Segment | None
    rxa: Segment
    route: Segment | None  # the RXR after the RXA run
    ordered_route: Segment | None  # the RXR of the order (RXO/RXE) before it

    @property
    def where(self) -> str:
        return f"RXA[{self.position}]"


# Where each model field comes from, to name the HL7 field when a value breaks an event limit.
_FIELD_OF_EVENT = {
    "PatientIdentifier.mrn": "PID-3.1",
    "PatientIdentifier.authority": "PID-3.4",
}


def read_administrations(
    message: Hl7Message, context: FeedContext, treatments: TreatmentTable
) -> list[Outcome]:
    """One outcome per RXA, then one Filter per order only dispensed (RXD, no RXA)."""
    administrations, dispensed = _administrations(message)
    outcomes = [
        refusing_bad_fields(
            given.where,
            partial(_outcome, message, given, context, treatments),
            _FIELD_OF_EVENT,
        )
        for given in administrations
    ]
    outcomes += [Filter("RXD: dispensed, not a record of administration")] * dispensed
    return outcomes


def _administrations(message: Hl7Message) -> tuple[list[_Administration], int]:
    """Every RXA with its PID, ORC and routes; and how many orders (ORC groups) were dispensed
    (an RXD) with no administration."""
    found: list[_Administration] = []
    dispensed_only = 0
    for pid, orc, segments in _orders(message):
        ordered_route: Segment | None = None
        run: list[Segment] = []  # RXAs waiting for the RXR after them
        for segment in [*segments, None]:
            if segment is not None and segment.name == "RXA":
                run.append(segment)
                continue
            route = segment if segment is not None and segment.name == "RXR" else None
            if run:
                found += [
                    _Administration(len(found) + 1 + i, pid, orc, rxa, route, ordered_route)
                    for i, rxa in enumerate(run)
                ]
                run = []
            elif route is not None and ordered_route is None:
                ordered_route = route
        names = {segment.name for segment in segments}
        dispensed_only += "RXD" in names and "RXA" not in names
    return found, dispensed_only


def _orders(message: Hl7Message) -> list[tuple[Segment | None, Segment | None, list[Segment]]]:
    """The segments of each order (from its ORC to the next ORC or PID), with the PID before."""
    orders: list[tuple[Segment | None, Segment | None, list[Segment]]] = []
    pid: Segment | None = None
    for segment in message.segments[1:]:
        if segment.name == "PID":
            pid = segment
            orders.append((pid, None, []))
        elif segment.name == "ORC" or not orders:
            orders.append((pid, segment if segment.name == "ORC" else None, []))
            if segment.name != "ORC":
                orders[-1][2].append(segment)
        else:
            orders[-1][2].append(segment)
    return orders


def _outcome(
    message: Hl7Message, given: _Administration, context: FeedContext, treatments: TreatmentTable
) -> Outcome:
    rxa, where = given.rxa, given.where
    triplets = [_triplet(rxa, 5, at) for at in ((1, 2, 3), (4, 5, 6))]
    codings = [(system, code) for code, _, system in triplets if code]
    texts = [text for _, text, _ in triplets if text]
    recognised = treatments.recognise(codings, texts)
    if recognised is None or recognised.kind == "procedure":
        named = "^".join(part for part in rxa.components(5)[:3] if part) or "no code"
        return Filter(f"{where}: {named[:60]} is not a treatment PlateletWatch tracks")
    deleted = rxa.get(21).upper() == "D"  # withdraws the earlier record of this administration
    status = rxa.get(20).upper()
    if deleted:
        status = "D"
    elif status in _NOT_GIVEN:
        return Filter(f"{where}: {_NOT_GIVEN[status]} (RXA-20 {status}): not given")
    elif status not in _GIVEN:
        return field_rejection(
            RejectReason.UNKNOWN_STATUS,
            f"{where}-20",
            f"completion status {status[:20]!r} is not in table 0322",
        )
    route = _route(given, treatments) if recognised.kind == "medication" else None
    if isinstance(route, Filter):
        return route
    patient = read_patient(message, given.pid)
    if patient is None:
        return no_patient()
    started = _time(f"{where}-3", rxa.get(3), context)
    if started is None:
        return field_rejection(
            RejectReason.NO_COLLECTION_TIME, f"{where}-3", "no start of administration (RXA-3)"
        )
    ended = _time(f"{where}-4", rxa.get(4), context)
    return Publish(_event(given, recognised, patient, (started, ended), route, status, context))


def _time(location: str, text: str, context: FeedContext) -> datetime | None:
    """A TS read in the deployment's zone when it has no offset; None when absent or malformed;
    FieldRefused naming `location` when implausible (year 9999, offset +2400)."""
    try:
        return parse_hl7_timestamp(text, context.local_zone) if text else None
    except ImplausibleTimeError as error:
        raise FieldRefused(location, f"{location}: {error}") from None


def _route(given: _Administration, treatments: TreatmentTable) -> Coding | Filter | None:
    """RXR-1 as a Coding, or a Filter when the route is not systemic: by HL7 table 0162 (either
    triplet), else by the treatment table's local routes (a SNOMED CT code, route text), as the
    FHIR feed decides; a route neither knows is kept as sent. None when no RXR says."""
    rxr = given.route or given.ordered_route
    if rxr is None or not rxr.get(1):
        return None
    triplets = ((1, 2, 3), (4, 5, 6))
    for code_at, text_at, system_at in triplets:
        code = rxr.get(1, code_at).upper()
        if code and rxr.get(1, system_at).upper() in _ROUTE_SYSTEM_NAMES:
            if code in NON_SYSTEMIC_ROUTES:
                return Filter(f"{given.where}: {NON_SYSTEMIC_ROUTES[code]} route: not ITP therapy")
            if code in SYSTEMIC_ROUTES:
                display = rxr.get(1, text_at) or SYSTEMIC_ROUTES[code]
                return _coding(ROUTE_SYSTEM, code, display, "RXR-1")
    read = [_triplet(rxr, 1, at) for at in triplets]
    codings = [(system, code) for code, _, system in read if code]
    local = treatments.local_route(codings, [text for _, text, _ in read if text])
    if local is not None:
        return Filter(f"{given.where}: route {local}: not ITP therapy")
    code, text, system = read[0]
    return _coding(system, code, text, "RXR-1") if code else None


def _triplet(segment: Segment, field: int, at: tuple[int, int, int]) -> tuple[str, str, str]:
    """One CWE triplet of `field` as (code, text, system URI): HL7 table names such as HL70426
    become their terminology.hl7.org URI, other names as the treatment table maps them."""
    code, text, system = (segment.get(field, component) for component in at)
    table = re.fullmatch(r"HL7 ?(\d{4})", system.upper())
    uri = f"http://terminology.hl7.org/CodeSystem/v2-{table[1]}" if table else None
    return code, text, uri or (canonical_system(system) if system else "")


def _coding(system: str, code: str, display: str, location: str) -> Coding:
    """A Coding, or FieldRefused naming `location` when a part is beyond an event limit."""
    try:
        return Coding(system=system, code=code, display=display or None)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise FieldRefused(location, f"{location}: {error}") from None


def _event(
    given: _Administration,
    recognised: Recognised,
    patient: Patient,
    times: tuple[datetime, datetime | None],
    route: Coding | None,
    status: str,
    context: FeedContext,
) -> MedicationEvent | TransfusionEvent:
    """`times` are the start and end of the administration."""
    rxa = given.rxa
    code = _administered_code(rxa)
    name = rxa.get(5, 2) or rxa.get(5, 5) or recognised.category.value
    identity = _identity(given, times[0])
    common = {
        "event_id": stable_event_id("context", "hl7v2", patient.identifier.key, *identity, status),
        "treatment_id": stable_event_id("treatment", "hl7v2", patient.identifier.key, *identity),
        "on_record": status != "D",
        "source": "hl7v2",
        "patient": patient,
        "category": recognised.category,
        "line": recognised.line,
        "code": code,
        "name": name,
        "received_at": context.received_at,
        "started_at": times[0],
        "dose": _dose(rxa),
    }
    if recognised.kind == "transfusion":
        return TransfusionEvent.model_validate(common)
    return MedicationEvent.model_validate({**common, "ended_at": times[1], "route": route})


def _administered_code(rxa: Segment) -> Coding | None:
    """The first RXA-5 triplet (primary, then alternate) naming both its system and its code."""
    for at in ((1, 2, 3), (4, 5, 6)):
        code, text, system = _triplet(rxa, 5, at)
        if code and system:
            return _coding(system, code, text, "RXA-5")
    return None


def _identity(given: _Administration, started: datetime) -> tuple[str, ...]:
    """What names this administration in any resend: the order (filler number, else placer),
    RXA-1/RXA-2 (give and administration sub-ids) and when it started (senders that never
    count RXA-2 up still give each dose its own time); without an order number, the drug."""
    orc, rxa = given.orc, given.rxa
    order = ""
    if orc is not None:
        order = "^".join(p for p in (orc.get(3, 1), orc.get(3, 2)) if p) or "^".join(
            p for p in (orc.get(2, 1), orc.get(2, 2)) if p
        )
    drug = "" if order else "^".join(rxa.components(5)[:6])
    return (order, rxa.get(1), rxa.get(2), started.isoformat(), drug)


def _dose(rxa: Segment) -> Dose | None:
    """RXA-6 amount in RXA-7 units, when it is a positive number with a unit; otherwise none is
    recorded (the dose is context for the hematologist, never used to decide an alert)."""
    unit = rxa.get(7, 1) or rxa.get(7, 2)
    try:
        value = float(rxa.get(6))
    except ValueError:
        return None
    if not unit or not math.isfinite(value) or not 0 < value <= _MAX_DOSE_VALUE:
        return None
    return Dose(value=value, unit=unit)
