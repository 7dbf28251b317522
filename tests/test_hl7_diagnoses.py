"""HL7 v2 diagnoses (DG1 in ORU^R01, ADT^A08, ADT^A31; PRB) as DiagnosisEvents, without a broker."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from schemas import DiagnosisEvent, LabResult, Topic
from services.config import Settings
from services.ingest.hl7v2.ack import build_ack
from services.ingest.hl7v2.dispatch import Hl7Result, read_message
from services.ingest.hl7v2.message import parse
from services.ingest.hl7v2.mllp import MllpLimits, MllpServer
from services.ingest.outcomes import Filter, Publish, Rejection, RejectReason
from services.ingest.pipeline import IngestPipeline
from tests.test_hl7 import CONTEXT, OBR, PID, RECEIVED, TREATMENTS, platelet_obx

ICD_10 = "http://hl7.org/fhir/sid/icd-10"
ICD_10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"

ITP_CODE = "D69.3^Immune thrombocytopenic purpura^I10C^302215000^Thrombocytopenic purpura^SCT"


def adt(
    *segments: str, event: str = "A08", version: str = "2.5.1", control: str = "ADT0001"
) -> bytes:
    msh = "MSH|^~\\&|EHR|GENHOSP|PW|PW|20261125081500+0100"
    msh += f"||ADT^{event}^ADT_A01|{control}|P|{version}"
    lines = [msh, f"EVN|{event}|20261125081500+0100", PID, "PV1|1|I|HAEM^3^B", *segments]
    return "\r".join(lines).encode()


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with `fields` (numbered as HL7 numbers them) and every other field empty."""
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))])


def dg1(
    code: str = ITP_CODE,
    identifier: str = "DX-1^GENHOSP",
    action: str = "A",
    set_id: str = "1",
    **more: str,
) -> str:
    fields = {1: set_id, 3: code, 5: "20261120093000+0100", 6: "F", 20: identifier, 21: action}
    fields.update({int(key[1:]): value for key, value in more.items()})
    return segment("DG1", fields)


def prb(
    action: str = "AD",
    code: str = ITP_CODE,
    instance: str = "PRB-77^GENHOSP",
    confirmation: str = "",
    life_cycle: str = "active",
) -> str:
    fields = {1: action, 2: "20261121100000+0100", 3: code, 4: instance, 7: "20261120"}
    fields.update({13: confirmation, 14: life_cycle})
    return segment("PRB", fields)


def read(raw: bytes) -> Hl7Result:
    return read_message(raw, CONTEXT, TREATMENTS)


def diagnoses(result: Hl7Result) -> list[DiagnosisEvent]:
    return [
        o.event
        for o in result.outcomes
        if isinstance(o, Publish) and isinstance(o.event, DiagnosisEvent)
    ]


def only_diagnosis(raw: bytes) -> DiagnosisEvent:
    result = read(raw)
    assert result.ack_code == "AA", result.rejections
    (event,) = diagnoses(result)
    return event


def only_rejection(raw: bytes) -> Rejection:
    (rejection,) = read(raw).rejections
    return rejection


# DG1


@pytest.mark.parametrize("event", ["A08", "A31"])
def test_a_dg1_in_an_adt_update_is_a_diagnosis_on_record(event: str) -> None:
    diagnosis = only_diagnosis(adt(dg1(), event=event))
    assert diagnosis.source == "hl7v2"
    assert diagnosis.patient.identifier.key == "GENHOSP|MRN-42"
    assert diagnosis.diagnosis_id == "DG1-20:DX-1^GENHOSP"
    assert [(c.system, c.code) for c in diagnosis.codes] == [
        (ICD_10_CM, "D69.3"),
        (SNOMED, "302215000"),
    ]
    assert diagnosis.name == "Immune thrombocytopenic purpura"
    assert diagnosis.on_record is True
    assert diagnosis.recorded_at == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    assert diagnosis.received_at == RECEIVED


@pytest.mark.parametrize(
    ("system", "uri"),
    [
        ("I10", ICD_10),
        ("ICD10", ICD_10),
        ("ICD-10", ICD_10),
        ("2.16.840.1.113883.6.3", ICD_10),
        ("I10C", ICD_10_CM),
        ("ICD10CM", ICD_10_CM),
        ("2.16.840.1.113883.6.90", ICD_10_CM),
        ("SCT", SNOMED),
        ("SNM", SNOMED),
        ("SNOMEDCT", SNOMED),
        (ICD_10_CM, ICD_10_CM),
    ],
)
def test_hl7_coding_system_names_become_the_fhir_uris(system: str, uri: str) -> None:
    diagnosis = only_diagnosis(adt(dg1(code=f"D69.3^ITP^{system}")))
    assert [(c.system, c.code) for c in diagnosis.codes] == [(uri, "D69.3")]


def test_a_v23_dg1_names_its_coding_system_in_dg1_2_and_its_text_in_dg1_4() -> None:
    raw = adt(segment("DG1", {1: "1", 2: "I10", 3: "D69.3", 4: "ITP", 5: "20261120", 6: "W"}))
    diagnosis = only_diagnosis(raw.replace(b"|2.5.1", b"|2.3"))
    assert [(c.system, c.code) for c in diagnosis.codes] == [(ICD_10, "D69.3")]
    assert diagnosis.name == "ITP"


def test_a_dg1_delete_takes_the_diagnosis_off_the_record_under_the_same_id() -> None:
    added = only_diagnosis(adt(dg1()))
    deleted = only_diagnosis(adt(dg1(action="D"), control="ADT0002"))
    assert deleted.on_record is False
    assert deleted.diagnosis_id == added.diagnosis_id
    assert deleted.event_id != added.event_id


def test_without_dg1_20_the_diagnosis_is_identified_by_its_code_not_its_position() -> None:
    """A set id numbers the DG1 within one message: another diagnosis may hold set id 1 in the
    next message, and must not replace this one."""
    first = read(
        adt(dg1(identifier=""), dg1(code="I10^Hypertension^I10", identifier="", set_id="2"))
    )
    second = read(
        adt(
            dg1(code="I10^Hypertension^I10", identifier=""),
            dg1(identifier="", set_id="2", action="D"),
        )
    )
    itp, hypertension = diagnoses(first)
    hypertension_again, itp_deleted = diagnoses(second)
    assert itp.diagnosis_id == itp_deleted.diagnosis_id != hypertension.diagnosis_id
    assert hypertension.diagnosis_id == hypertension_again.diagnosis_id
    assert itp_deleted.on_record is False


def test_the_same_message_resent_gives_the_same_event_id() -> None:
    assert only_diagnosis(adt(dg1())).event_id == only_diagnosis(adt(dg1())).event_id


def test_a_diagnosis_with_only_a_local_code_is_filtered() -> None:
    result = read(adt(dg1(code="ITP-7^ITP^L")))
    assert result.ack_code == "AA"
    assert [type(o) for o in result.outcomes] == [Filter]


def test_an_unknown_dg1_action_is_refused_naming_dg1_21() -> None:
    rejection = only_rejection(adt(dg1(action="Q")))
    assert (rejection.reason, rejection.location) == (RejectReason.UNKNOWN_STATUS, "DG1[1]-21")


def test_a_code_beyond_the_event_limit_is_refused_naming_dg1_3() -> None:
    rejection = only_rejection(adt(dg1(code=f"{'D' * 65}^ITP^I10C")))
    assert (rejection.reason, rejection.location) == (RejectReason.INVALID_FIELDS, "DG1[1]-3")


def test_an_implausible_diagnosis_time_is_passed_over() -> None:
    assert only_diagnosis(adt(dg1(d5="99991231"))).recorded_at is None


def test_without_a_patient_identifier_the_diagnosis_is_refused() -> None:
    raw = adt(dg1()).replace(PID.encode(), b"PID|1||^^^NPI^MR||DOE^JANE")
    rejection = only_rejection(raw)
    assert (rejection.reason, rejection.location) == (RejectReason.NO_PATIENT_IDENTIFIER, "PID-3")


# PRB


@pytest.mark.parametrize(
    ("action", "confirmation", "life_cycle", "on_record"),
    [
        ("AD", "", "active", True),
        ("UP", "confirmed", "Active", True),
        ("AD", "", "recurrence", True),
        ("AD", "", "relapse", True),
        ("AD", "", "", True),
        ("UP", "", "resolved", False),
        ("UP", "", "inactive", False),
        ("UP", "", "remission", False),
        ("CO", "refuted", "active", False),
        ("CO", "ruled out", "active", False),
        ("CO", "Ruled-Out^Ruled out^L", "active", False),
        ("CO", "erroneous", "active", False),
        ("CO", "entered-in-error", "", False),
        ("DE", "", "active", False),
    ],
)
def test_a_problem_is_on_record_while_active_and_not_refuted_or_deleted(
    action: str, confirmation: str, life_cycle: str, on_record: bool
) -> None:
    diagnosis = only_diagnosis(adt(prb(action, confirmation=confirmation, life_cycle=life_cycle)))
    assert diagnosis.on_record is on_record
    assert diagnosis.diagnosis_id == "PRB-4:PRB-77^GENHOSP"
    assert [c.code for c in diagnosis.codes] == ["D69.3", "302215000"]
    assert diagnosis.recorded_at == datetime(2026, 11, 19, 23, 0, tzinfo=UTC)  # PRB-7, Paris


@pytest.mark.parametrize(
    ("problem", "location"),
    [
        (prb(action="ZZ"), "PRB[1]-1"),
        (prb(life_cycle="simmering"), "PRB[1]-14"),
        (prb(confirmation="perhaps"), "PRB[1]-13"),
    ],
)
def test_a_problem_status_not_understood_is_refused_naming_its_field(
    problem: str, location: str
) -> None:
    rejection = only_rejection(adt(problem))
    assert (rejection.reason, rejection.location) == (RejectReason.UNKNOWN_STATUS, location)


# Messages


def test_an_oru_with_a_dg1_gives_the_count_and_the_diagnosis() -> None:
    oru = "\r".join(
        [
            "MSH|^~\\&|LIS|GENHOSP|PW|PW|20261125081500+0100||ORU^R01^ORU_R01|MSG1|P|2.5.1",
            PID,
            dg1(),
            OBR,
            platelet_obx(),
        ]
    ).encode()
    result = read(oru)
    assert result.ack_code == "AA"
    assert [type(o.event) for o in result.outcomes if isinstance(o, Publish)] == [
        LabResult,
        DiagnosisEvent,
    ]


def test_an_adt_without_diagnoses_is_accepted_with_nothing_to_publish() -> None:
    result = read(adt())
    assert result.ack_code == "AA"
    assert [type(o) for o in result.outcomes] == [Filter]


@pytest.mark.parametrize("event", ["A01", "A04"])
def test_other_adt_events_are_refused_whole(event: str) -> None:
    result = read(adt(dg1(), event=event))
    assert result.ack_code == "AR"
    assert [r.reason for r in result.rejections] == [RejectReason.UNSUPPORTED_MESSAGE]
    assert "ADT^A08" in result.rejections[0].message


def test_the_ack_names_the_trigger_event_it_answers() -> None:
    result = read(adt(dg1(), event="A31"))
    ack = parse(build_ack(result, "AA", [], RECEIVED))
    assert [ack.msh.get(9, n) for n in (1, 2, 3)] == ["ACK", "A31", "ACK"]
    msa = ack.first("MSA")
    assert msa is not None
    assert (msa.get(1), msa.get(2)) == ("AA", "ADT0001")


def test_a_refused_problem_gets_ae_with_an_err_naming_the_field() -> None:
    result = read(adt(dg1(), prb(life_cycle="simmering")))
    assert result.ack_code == "AE"
    ack = parse(build_ack(result, result.ack_code, result.rejections, RECEIVED))
    (err,) = ack.all("ERR")
    assert (err.get(2, 1), err.get(2, 2), err.get(3, 1)) == ("PRB[1]", "14", "103")


class _Recorder:
    """A Publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str | None, BaseModel]] = []

    @property
    def broker_reachable(self) -> bool:
        return True

    async def publish(
        self, topic: str, key: str | None, event: BaseModel, headers: dict[str, str] | None = None
    ) -> None:
        self.published.append((topic, key, event))


async def test_over_mllp_a_diagnosis_goes_to_the_clinical_context_topic_keyed_by_patient() -> None:
    settings = Settings()
    recorder = _Recorder()
    server = MllpServer(
        IngestPipeline(settings, recorder), "127.0.0.1", 0, MllpLimits(1024, 1, 1, 1), TREATMENTS
    )
    ack = parse(await server.acknowledge(adt(dg1(), prb())))
    msa = ack.first("MSA")
    assert msa is not None
    assert msa.get(1) == "AA"
    assert [(topic, key, type(event)) for topic, key, event in recorder.published] == [
        (settings.topic(Topic.CLINICAL_CONTEXT), "GENHOSP|MRN-42", DiagnosisEvent)
    ] * 2


def test_replay_reads_adt_files(tmp_path: Path) -> None:
    from services.classifier.rules import load_rules
    from services.ingest.treatments import load_treatment_table
    from services.tools.replay import Summary, replay

    path = tmp_path / "adt.hl7"
    path.write_bytes(adt(dg1()) + b"\n\n" + adt(prb(), event="A31", control="ADT0002"))
    summary = Summary()
    alerts = list(replay([path], load_rules(), load_treatment_table(), CONTEXT, summary))
    assert (summary.events, summary.filtered, dict(summary.rejected)) == (2, 0, {})
    assert alerts == []
