"""HL7 v2 pharmacy administrations (RAS^O17, RDS^O13) to treatment context: the reader without a
broker, the MLLP server over the real one, and replay agreeing with FHIR."""

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fuzz.targets import TARGETS
from schemas import (
    Coding,
    Dose,
    MedicationEvent,
    PlateletAlert,
    Topic,
    TransfusionEvent,
    TreatmentCategory,
)
from services.classifier.rules import load_rules
from services.ingest.codes import FeedContext
from services.ingest.hl7v2.ack import build_ack
from services.ingest.hl7v2.dispatch import Hl7Result, read_message
from services.ingest.hl7v2.message import parse
from services.ingest.hl7v2.mllp import MllpServer, send_messages
from services.ingest.outcomes import Filter, Publish, Rejection, RejectReason
from services.ingest.pipeline import IngestPipeline
from services.ingest.treatments import load_treatment_table
from services.tools.replay import Summary, replay
from tests.conftest import REPO, Kafka
from tests.real_time_corpus import oru, site_context
from tests.test_mllp_server import LIMITS, msa

RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CONTEXT = FeedContext(received_at=RECEIVED, local_zone=ZoneInfo("Europe/Paris"))
TREATMENTS = load_treatment_table()
V2_0162 = "http://terminology.hl7.org/CodeSystem/v2-0162"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

MSH = "MSH|^~\\&|PHARM|GENHOSP|PW|PW|20261125081500+0100||RAS^O17^RAS_O17|RAS0001|P|2.5.1"
PID = "PID|1||MRN-42^^^GENHOSP^MR||DOE^JANE||20120407|F"
ORC = "ORC|RE|PO-1^EHR|FO-9^PHARM"
DEXAMETHASONE = "3264^dexamethasone^RXNORM"


def rxa(
    code: str = DEXAMETHASONE,
    amount: str = "20",
    units: str = "mg^milligram^UCUM",
    start: str = "20261125083000",
    end: str = "20261125084500",
    status: str = "CP",
    action: str = "A",
    sub: str = "1",
) -> str:
    """RXA-1 give sub-id 0, RXA-2 `sub`, RXA-3..7, RXA-20 `status`, RXA-21 `action`."""
    head = f"RXA|0|{sub}|{start}|{end}|{code}|{amount}|{units}"
    return head + "|" * 12 + f"|{status}|{action}"


def rxr(route: str = "IV^Intravenous^HL70162") -> str:
    return f"RXR|{route}"


def ras(*segments: str, msh: str = MSH, pid: str = PID, orc: str = ORC) -> bytes:
    """A RAS^O17: MSH, PID, ORC, then `segments` (by default one IV dexamethasone)."""
    body = list(segments) or [rxa(), rxr()]
    return "\r".join([msh, *([pid] if pid else []), orc, *body]).encode()


def read(raw: bytes, context: FeedContext = CONTEXT) -> Hl7Result:
    return read_message(raw, context, TREATMENTS)


def only(raw: bytes) -> Publish | Filter | Rejection:
    (outcome,) = read(raw).outcomes
    return outcome


def only_event(raw: bytes) -> MedicationEvent | TransfusionEvent:
    outcome = only(raw)
    assert isinstance(outcome, Publish), outcome
    assert isinstance(outcome.event, MedicationEvent | TransfusionEvent)
    return outcome.event


def only_filter(raw: bytes) -> str:
    outcome = only(raw)
    assert isinstance(outcome, Filter), outcome
    return outcome.detail


def only_rejection(raw: bytes) -> Rejection:
    result = read(raw)
    (rejection,) = result.rejections
    return rejection


# --- what an administration becomes -----------------------------------------------------------


def test_a_completed_iv_dexamethasone_is_first_line_therapy_with_route_dose_and_times() -> None:
    event = only_event(ras())
    assert isinstance(event, MedicationEvent)
    assert (event.source, event.category, event.line) == (
        "hl7v2",
        TreatmentCategory.CORTICOSTEROID,
        "first",
    )
    assert event.patient.identifier.key == "GENHOSP|MRN-42"
    assert event.name == "dexamethasone"
    assert event.code == Coding(system=RXNORM, code="3264", display="dexamethasone")
    assert event.route == Coding(system=V2_0162, code="IV", display="Intravenous")
    assert event.dose == Dose(value=20, unit="mg")
    # no offset: read in the deployment's zone (Paris, +01:00 in November), held in UTC
    assert event.started_at == datetime(2026, 11, 25, 7, 30, tzinfo=UTC)
    assert event.ended_at == datetime(2026, 11, 25, 7, 45, tzinfo=UTC)
    assert event.received_at == RECEIVED
    assert read(ras()).ack_code == "AA"


def test_a_time_with_an_offset_is_read_as_given() -> None:
    event = only_event(ras(rxa(start="20261125083000-0500", end=""), rxr()))
    assert event.started_at == datetime(2026, 11, 25, 13, 30, tzinfo=UTC)
    assert isinstance(event, MedicationEvent)
    assert event.ended_at is None


@pytest.mark.parametrize("status", ["CP", "PA", ""])
def test_complete_partial_or_unsaid_completion_status_counts_as_given(status: str) -> None:
    """RXA-20 empty means complete (HL7 v2.5 4A.7.1.20)."""
    assert only_event(ras(rxa(status=status), rxr())).category is TreatmentCategory.CORTICOSTEROID


@pytest.mark.parametrize(("status", "meaning"), [("RE", "refused"), ("NA", "not administered")])
def test_refused_or_not_administered_is_filtered_as_not_given(status: str, meaning: str) -> None:
    detail = only_filter(ras(rxa(status=status), rxr()))
    assert meaning in detail
    assert "not given" in detail


def test_an_unknown_completion_status_is_refused_naming_the_field() -> None:
    rejection = only_rejection(ras(rxa(status="ZZ"), rxr()))
    assert rejection.reason is RejectReason.UNKNOWN_STATUS
    assert rejection.location == "RXA[1]-20"
    assert read(ras(rxa(status="ZZ"), rxr())).ack_code == "AE"


def test_an_administration_deleted_by_its_action_code_withdraws_the_earlier_record() -> None:
    given = only_event(ras(rxa(), rxr()))
    deleted = only_event(ras(rxa(action="D"), rxr()))
    assert given.on_record
    assert not deleted.on_record
    assert deleted.treatment_id == given.treatment_id
    assert deleted.treatment_id is not None
    assert deleted.event_id != given.event_id


@pytest.mark.parametrize("route", ["PO", "IV", "IM", "SC", "iv"])
@pytest.mark.parametrize("system", ["HL70162", "", V2_0162])
def test_systemic_routes_are_therapy_and_named_on_the_event(route: str, system: str) -> None:
    event = only_event(ras(rxa(), rxr(f"{route}^^{system}")))
    assert isinstance(event, MedicationEvent)
    assert event.route is not None
    assert (event.route.system, event.route.code) == (V2_0162, route.upper())


@pytest.mark.parametrize(
    ("route", "name"),
    [
        ("OP", "ophthalmic"),
        ("OT", "otic"),
        ("TP", "topical"),
        ("IH", "inhalation"),
        ("NS", "nasal"),
        ("DT", "dental"),
    ],
)
def test_non_systemic_routes_are_filtered_with_the_reason(route: str, name: str) -> None:
    assert only_filter(ras(rxa(), rxr(f"{route}^^HL70162"))) == (
        f"RXA[1]: {name} route: not ITP therapy"
    )


def test_an_antiemetic_iv_dexamethasone_is_still_a_systemic_corticosteroid() -> None:
    code = "^Dexamethasone 8 mg IV (antiemetic, pre-chemotherapy)^"
    event = only_event(ras(rxa(code=code, amount="8"), rxr("IV")))
    assert event.category is TreatmentCategory.CORTICOSTEROID
    assert event.code is None  # no coding system given: only the name was recognised


def test_the_route_in_the_alternate_triplet() -> None:
    event = only_event(ras(rxa(), rxr("47625008^Intravenous^SCT^IV^Intravenous^HL70162")))
    assert isinstance(event, MedicationEvent)
    assert event.route == Coding(system=V2_0162, code="IV", display="Intravenous")


def test_a_route_outside_table_0162_is_kept_as_sent_as_fhir_keeps_an_unknown_route() -> None:
    event = only_event(ras(rxa(), rxr("IVPB^IV piggyback^L")))
    assert isinstance(event, MedicationEvent)
    assert event.route == Coding(system="L", code="IVPB", display="IV piggyback")


@pytest.mark.parametrize(
    ("route", "named"),
    [
        ("54485002^Ophthalmic route^SCT", "Ophthalmic route (54485002)"),
        ("EYE^Eye drops^L", "Eye drops"),
    ],
)
def test_a_route_outside_table_0162_that_the_treatment_table_calls_local_is_filtered(
    route: str, named: str
) -> None:
    assert only_filter(ras(rxa(), rxr(route))) == f"RXA[1]: route {named}: not ITP therapy"


def test_the_administration_route_wins_over_the_ordered_one_which_is_the_fallback() -> None:
    ordered = "RXE|^^^20261125^^R|3264^dexamethasone^RXNORM|20||mg"
    given = only_event(ras(ordered, rxr("PO"), rxa(), rxr("IV")))
    assert isinstance(given, MedicationEvent)
    assert given.route is not None
    assert given.route.code == "IV"
    fallback = only_event(ras(ordered, rxr("PO"), rxa()))
    assert isinstance(fallback, MedicationEvent)
    assert fallback.route is not None
    assert fallback.route.code == "PO"


def test_no_route_at_all_is_kept_without_one() -> None:
    event = only_event(ras(rxa()))
    assert isinstance(event, MedicationEvent)
    assert event.route is None


@pytest.mark.parametrize(
    ("amount", "units", "dose"),
    [
        ("0.6", "mg/kg^^UCUM", Dose(value=0.6, unit="mg/kg")),
        ("40", "^milligram", Dose(value=40, unit="milligram")),
        ("", "mg", None),
        ("abc", "mg", None),
        ("-4", "mg", None),
        ("nan", "mg", None),
        ("20", "", None),
    ],
)
def test_the_dose_from_amount_and_units_when_both_are_readable(
    amount: str, units: str, dose: Dose | None
) -> None:
    event = only_event(ras(rxa(amount=amount, units=units), rxr()))
    assert isinstance(event, MedicationEvent)
    assert event.dose == dose


def test_the_administered_code_in_the_alternate_triplet() -> None:
    event = only_event(ras(rxa(code="DEX4^Dex inj^LOCALRX^3264^dexamethasone^RXNORM"), rxr()))
    assert event.category is TreatmentCategory.CORTICOSTEROID


def test_an_unknown_drug_is_filtered_not_refused_even_without_a_patient() -> None:
    raw = ras(rxa(code="26225^ondansetron^RXNORM", start=""), rxr(), pid="")
    assert "ondansetron" in only_filter(raw)
    assert read(raw).ack_code == "AA"


def test_a_platelet_product_is_a_transfusion() -> None:
    code = "^Apheresis platelets, leukoreduced^"
    event = only_event(ras(rxa(code=code, amount="1", units="{unit}"), rxr("IV")))
    assert isinstance(event, TransfusionEvent)
    assert event.category is TreatmentCategory.PLATELET_TRANSFUSION
    assert event.line == "supportive"
    assert event.dose == Dose(value=1, unit="{unit}")


def test_a_platelet_product_by_its_hl7_table_0426_code() -> None:
    event = only_event(ras(rxa(code="PLTPH^^HL70426", amount="1", units="{unit}"), rxr("IV")))
    assert event.category is TreatmentCategory.PLATELET_TRANSFUSION


def test_several_orders_in_one_message_each_with_its_own_route() -> None:
    second_order = "ORC|RE|PO-2^EHR|FO-10^PHARM"
    raw = ras(
        rxa(),
        rxr("IV"),
        second_order,
        rxa(code="^dexamethasone 0.1% eye drops^", sub="1"),
        rxr("OP"),
    )
    dexamethasone, eye_drops = read(raw).outcomes
    assert isinstance(dexamethasone, Publish)
    assert isinstance(eye_drops, Filter)
    assert "ophthalmic" in eye_drops.detail


def test_a_dispense_without_an_administration_is_filtered() -> None:
    msh = MSH.replace("RAS^O17^RAS_O17", "RDS^O13^RDS_O13")
    rxd = "RXD|1|3264^dexamethasone^RXNORM|20261125080000|20|mg"
    detail = only_filter(ras(rxd, rxr("PO"), msh=msh))
    assert "dispensed" in detail
    assert "not a record of administration" in detail


def test_an_rds_with_an_administration_is_read_as_ras() -> None:
    msh = MSH.replace("RAS^O17^RAS_O17", "RDS^O13^RDS_O13")
    assert only_event(ras(rxa(), rxr(), msh=msh)).category is TreatmentCategory.CORTICOSTEROID


# --- identity ---------------------------------------------------------------------------------


def test_a_resend_has_the_same_event_id_and_another_administration_another() -> None:
    first = only_event(ras())
    resent = ras(msh=MSH.replace("RAS0001", "RAS0002").replace("081500", "101500"))
    assert only_event(resent).event_id == first.event_id
    assert only_event(ras(rxa(sub="2", start="20261126083000"), rxr())).event_id != first.event_id
    assert only_event(ras(rxa(status="PA"), rxr())).event_id != first.event_id


def test_without_an_order_number_the_identity_is_the_administration_itself() -> None:
    first = only_event(ras(orc="ORC|RE"))
    resent = ras(orc="ORC|RE", msh=MSH.replace("RAS0001", "RAS0002"))
    assert only_event(resent).event_id == first.event_id
    later = ras(rxa(start="20261126083000"), rxr(), orc="ORC|RE")
    assert only_event(later).event_id != first.event_id


# --- refusals and ACKs ------------------------------------------------------------------------


def test_no_patient_is_refused_with_an_err_naming_pid_3() -> None:
    result = read(ras(pid=""))
    (rejection,) = result.rejections
    assert rejection.reason is RejectReason.NO_PATIENT_IDENTIFIER
    ack = parse(build_ack(result, result.ack_code, result.rejections, RECEIVED))
    msa, err = ack.first("MSA"), ack.first("ERR")
    assert msa is not None
    assert err is not None
    assert (msa.get(1), msa.get(2)) == ("AE", "RAS0001")
    assert (err.get(2, 1), err.get(2, 2), err.get(3, 1), err.get(4)) == ("PID", "3", "101", "E")


@pytest.mark.parametrize(
    ("start", "reason"),
    [("", RejectReason.NO_COLLECTION_TIME), ("99991231", RejectReason.INVALID_FIELDS)],
)
def test_no_or_an_absurd_start_of_administration_is_refused(
    start: str, reason: RejectReason
) -> None:
    rejection = only_rejection(ras(rxa(start=start), rxr()))
    assert (rejection.reason, rejection.location) == (reason, "RXA[1]-3")


def test_the_ack_answers_the_trigger_event_it_acknowledges() -> None:
    result = read(ras())
    ack = parse(build_ack(result, "AA", [], RECEIVED))
    assert (ack.msh.get(9, 1), ack.msh.get(9, 2), ack.msh.get(9, 3)) == ("ACK", "O17", "ACK")


@pytest.mark.parametrize(
    ("raw", "reason", "err_code"),
    [
        (b"not hl7 at all", RejectReason.UNPARSEABLE_HL7, "100"),
        (
            ras(msh=MSH.replace("RAS^O17^RAS_O17", "RAS^O01")),
            RejectReason.UNSUPPORTED_MESSAGE,
            "200",
        ),
        (ras(msh=MSH.replace("|2.5.1", "|2.2")), RejectReason.UNSUPPORTED_VERSION, "203"),
    ],
)
def test_a_message_not_accepted_as_such_is_ar(
    raw: bytes, reason: RejectReason, err_code: str
) -> None:
    result = read(raw)
    (rejection,) = result.rejections
    assert rejection.reason is reason
    assert result.ack_code == "AR"
    ack = parse(build_ack(result, result.ack_code, result.rejections, RECEIVED))
    err = ack.first("ERR")
    assert err is not None
    assert err.get(3, 1) == err_code


def test_an_unsupported_type_names_every_accepted_one() -> None:
    (rejection,) = read(ras(msh=MSH.replace("RAS^O17^RAS_O17", "ADT^A01"))).rejections
    assert "ORU^R01" in rejection.message
    assert "RAS^O17" in rejection.message
    assert "RDS^O13" in rejection.message


def test_an_oru_still_reaches_the_lab_reader() -> None:
    result = read(oru("MRN-42", "FL-1", "12", "202611250740"))
    (outcome,) = result.outcomes
    assert isinstance(outcome, Publish)
    assert outcome.event.patient.identifier.key == "GENHOSP|MRN-42"


# --- over MLLP, to the real broker ------------------------------------------------------------


@pytest.mark.integration
async def test_over_mllp_administrations_reach_the_context_topic_keyed_by_patient(
    kafka: Kafka,
) -> None:
    pipeline = IngestPipeline(kafka.settings, kafka.publisher)
    server = MllpServer(pipeline, "127.0.0.1", 0, LIMITS, TREATMENTS)
    await server.start()
    try:
        acks = await send_messages(
            "127.0.0.1",
            server.port,
            [
                ras(),
                ras(rxa(code="^dexamethasone 0.1% eye drops^"), rxr("OP")),
                ras(rxa(status="ZZ"), rxr()),
                ras(msh=MSH.replace("RAS0001", "RAS0002")),  # the first, resent
            ],
            10,
        )
    finally:
        await server.stop()
    assert [msa(ack)[:2] for ack in acks] == [
        ("AA", "RAS0001"),
        ("AA", "RAS0001"),
        ("AE", "RAS0001"),
        ("AA", "RAS0002"),
    ]
    assert parse(acks[0]).msh.get(9, 2) == "O17"
    records = await kafka.records(Topic.CLINICAL_CONTEXT)
    assert [record.key for record in records] == [b"GENHOSP|MRN-42"] * 2
    first, resent = (json.loads(record.value) for record in records)
    assert first["event_id"] == resent["event_id"]
    assert (first["kind"], first["category"], first["line"]) == (
        "medication",
        "corticosteroid",
        "first",
    )
    assert first["route"]["code"] == "IV"
    assert [letter.reason_code for letter in await kafka.dead_letters()] == ["unknown_status"]


# --- replay: the same therapy as HL7 or FHIR gives the same alerts ----------------------------


def dexamethasone_as_fhir(started: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "MedicationAdministration",
            "id": "dex-1",
            "status": "completed",
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": "3264", "display": "dexamethasone"}]
            },
            "subject": {"identifier": {"system": "GENHOSP", "value": "MRN-7"}},
            "effectiveDateTime": started,
            "dosage": {"route": {"text": "intravenous"}, "dose": {"value": 40, "unit": "mg"}},
        }
    ).encode()


def dexamethasone_as_ras(started: str, route: str = "IV") -> bytes:
    return ras(
        rxa(amount="40", start=started, end=""),
        rxr(route),
        msh=MSH.replace("20261125081500+0100", started),
        pid="PID|1||MRN-7^^^GENHOSP^MR||DOE^JOHN||19700501|M",
    )


def alerts_over(therapy: bytes, directory: Path) -> list[PlateletAlert]:
    counts = [
        oru("MRN-7", "FL-1", "22", "202611010800"),  # the baseline, the day before
        oru("MRN-7", "FL-2", "35", "202611090800"),  # day 7 and 8: below twice the baseline
        oru("MRN-7", "FL-3", "38", "202611100800"),
    ]
    directory.mkdir()
    paths = []
    for number, raw in enumerate([counts[0], therapy, *counts[1:]]):
        path = directory / f"{number}.{'json' if raw.startswith(b'{') else 'hl7'}"
        path.write_bytes(raw)
        paths.append(path)
    summary = Summary()
    alerts = list(replay(paths, load_rules(), TREATMENTS, site_context(), summary))
    assert not summary.rejected, summary.lines()
    return alerts


def comparable(alert: PlateletAlert) -> tuple[object, ...]:
    return (
        alert.kind.value,
        alert.value_10e9_per_l,
        tuple((r.result_id, r.count) for r in alert.evidence.results),
        alert.evidence.first_line_on_record,
        tuple((t.category, t.started_at) for t in alert.evidence.treatments),
    )


def test_replay_of_a_ras_dexamethasone_gives_the_alerts_the_fhir_one_gives(tmp_path: Path) -> None:
    as_hl7 = alerts_over(dexamethasone_as_ras("202611020800"), tmp_path / "hl7")
    as_fhir = alerts_over(dexamethasone_as_fhir("2026-11-02T08:00:00+01:00"), tmp_path / "fhir")
    assert [comparable(a) for a in as_hl7] == [comparable(a) for a in as_fhir]
    assert [a.kind.value for a in as_hl7] == ["refractory"]


def test_replay_of_dexamethasone_eye_drops_is_no_therapy(tmp_path: Path) -> None:
    alerts = alerts_over(dexamethasone_as_ras("202611020800", route="OP"), tmp_path / "eye")
    assert "refractory" not in [a.kind.value for a in alerts]


# --- the shipped example, and the fuzzer reaching this reader ---------------------------------


def test_the_example_ras_is_read_as_first_line_therapy() -> None:
    raw = (REPO / "examples" / "ras-o17-dexamethasone.hl7").read_bytes()
    event = only_event(raw)
    assert (event.category, event.line) == (TreatmentCategory.CORTICOSTEROID, "first")


def test_the_hl7_fuzz_target_reads_pharmacy_messages_too() -> None:
    outcomes = TARGETS["hl7"].read(ras(), CONTEXT)
    assert [type(outcome) for outcome in outcomes] == [Publish]
