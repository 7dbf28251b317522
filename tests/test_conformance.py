"""Every published sample in ../shared/conformance passes through ingest with the right outcome.

The pure tests read each file through the feed parsers; the integration test sends the HL7 files
over MLLP with `plateletwatch send` and posts the FHIR files over HTTP to a running ingest.
Skipped, with the reason, where ../shared is not checked out beside this repository.
"""

import asyncio
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest

from schemas import DeadLetter, LabResult, Topic
from services.config import Settings
from services.ingest.codes import FeedContext
from services.ingest.fhir import read_fhir
from services.ingest.hl7v2.dispatch import read_message
from services.ingest.outcomes import Publish, Rejection, RejectReason
from services.ingest.treatments import load_treatment_table
from tests.conftest import AUTH, REPO, read_topic, run_cli, settings_env

CONFORMANCE = REPO.parent / "shared" / "conformance"
pytestmark = pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"conformance samples not found at {CONFORMANCE}"
)
CONTEXT = FeedContext(received_at=datetime(2026, 11, 25, tzinfo=UTC), local_zone=UTC)
TREATMENTS = load_treatment_table()

# file -> (ACK code, published platelet values in 10^9/L, filtered, rejection reasons)
HL7_EXPECTED: dict[str, tuple[str, list[float], int, list[RejectReason]]] = {
    "ca_nbs_escapes_trusted-intermediary.hl7": ("AA", [], 155, []),
    "cdc_elims_arbovirus_cr_only_PLT_codesystem_reportstream.hl7": ("AA", [], 6, []),
    "cdc_elims_tcruzi_obx11_C_corrected_reportstream.hl7": ("AA", [], 3, []),
    "epic_mayo_v23_factorV_nte_trusted-intermediary.hl7": ("AA", [], 3, []),
    "lab_oru_1_hemogram_11125-2_fhirconverter.hl7": ("AA", [], 10, []),
    "lab_oru_2_hemogram_11125-2_fhirconverter.hl7": ("AA", [], 10, []),
    "micro_sign_utf8_unit_trusted-intermediary.hl7": ("AA", [], 1, []),
    "nist_lri_cbc_26515-7_fhirconverter.hl7": ("AA", [210.0], 27, []),
    "oracle_cerner_v23_albumin_creat_trusted-intermediary.hl7": ("AA", [], 3, []),
    "oru_r01_01_kitchen_sink_fhirconverter.hl7": ("AA", [], 5, []),
    "oru_r01_ghh_glucose_v24_fhirconverter.hl7": ("AA", [], 1, []),
}
# file -> (HTTP status, published platelet values, filtered, rejection reasons); the
# fhirconverter Bundles are batches, answered 200 with a batch-response even in part refused
FHIR_EXPECTED: dict[str, tuple[int, list[float], int, list[RejectReason]]] = {
    # its only patient identifier is an SSN, which PlateletWatch never uses as a key: the
    # platelet Observation and its 4 Conditions (diagnoses since issue 14) are refused
    "fhirconverter_CCDA_CCD_bundle_777-3_10e9_per_L_LX.json": (
        200,
        [],
        56,
        [RejectReason.NO_PATIENT_IDENTIFIER] * 5,
    ),
    # its 2 Conditions are published as diagnoses (not on record: their clinicalStatus is a
    # SNOMED "Alive and well", not a condition-clinical code)
    "fhirconverter_CCDA_HandP_bundle_26515-7_10plus3_per_ul.json": (200, [123.0], 34, []),
    "fhirconverter_LAB-ORU-2_bundle_11125-2_giga_per_L.json": (200, [], 25, []),
    "fhirconverter_LRI_CBC_bundle_26515-7_cells_per_uL.json": (200, [210.0], 41, []),
    "reportstream_bundle_observation_corrected.json": (202, [], 19, []),
    "reportstream_bundle_observation_entered-in-error.json": (202, [], 17, []),
    "uscore_diagnosticreport-cbc.json": (202, [], 1, []),
    # subject is "Patient/example" with nothing to resolve it: refused unless the site names
    # the authority of its EHR's patient ids (see test_uscore_with_a_reference_authority)
    "uscore_observation-cbc-platelets.json": (422, [], 0, [RejectReason.NO_PATIENT_IDENTIFIER]),
}


# file -> diagnoses published beside its platelet values (FHIR Conditions)
FHIR_DIAGNOSES = {"fhirconverter_CCDA_HandP_bundle_26515-7_10plus3_per_ul.json": 2}


def _summary(outcomes: list[object]) -> tuple[list[float], int, list[RejectReason]]:
    values = [
        o.event.count.value_10e9_per_l
        for o in outcomes
        if isinstance(o, Publish) and isinstance(o.event, LabResult) and o.event.count
    ]
    kinds = Counter(type(o).__name__ for o in outcomes)
    return values, kinds["Filter"], [o.reason for o in outcomes if isinstance(o, Rejection)]


def test_every_sample_has_an_expected_outcome() -> None:
    assert sorted(p.name for p in (CONFORMANCE / "hl7v2").iterdir()) == sorted(HL7_EXPECTED)
    assert sorted(p.name for p in (CONFORMANCE / "fhir").iterdir()) == sorted(FHIR_EXPECTED)


@pytest.mark.parametrize("name", sorted(HL7_EXPECTED))
def test_hl7_sample(name: str) -> None:
    ack, values, filtered, reasons = HL7_EXPECTED[name]
    result = read_message((CONFORMANCE / "hl7v2" / name).read_bytes(), CONTEXT, TREATMENTS)
    assert result.ack_code == ack
    assert _summary(list(result.outcomes)) == (values, filtered, reasons)


def test_nist_cbc_platelet_in_detail() -> None:
    raw = (CONFORMANCE / "hl7v2" / "nist_lri_cbc_26515-7_fhirconverter.hl7").read_bytes()
    (event,) = read_message(raw, CONTEXT, TREATMENTS).events
    assert event.patient.identifier.mrn == "PATID1234"
    assert event.count is not None
    assert (event.count.original_value, event.count.original_unit) == ("210000", "{cells}/uL")
    assert event.code.code == "26515-7"
    assert event.abnormal_flags == ("N",)


@pytest.mark.parametrize("name", sorted(FHIR_EXPECTED))
def test_fhir_sample(name: str) -> None:
    _, values, filtered, reasons = FHIR_EXPECTED[name]
    entries = read_fhir((CONFORMANCE / "fhir" / name).read_bytes(), CONTEXT, load_treatment_table())
    assert _summary([e.outcome for e in entries]) == (values, filtered, reasons)


def test_uscore_with_a_reference_authority() -> None:
    raw = (CONFORMANCE / "fhir" / "uscore_observation-cbc-platelets.json").read_bytes()
    context = FeedContext(CONTEXT.received_at, UTC, fhir_reference_authority="https://ehr.example")
    (entry,) = read_fhir(raw, context, load_treatment_table())
    assert isinstance(entry.outcome, Publish)
    assert entry.outcome.event.patient.identifier.key == "https://ehr.example|example"


@pytest.mark.integration
async def test_samples_through_a_running_ingest(topics: Settings, start_service) -> None:
    ingest = start_service("ingest", topics)
    base = f"http://{topics.bind_host}:{topics.ingest_port}"
    ingest.wait_ready(f"{base}/readyz")

    hl7_files = [str(CONFORMANCE / "hl7v2" / name) for name in sorted(HL7_EXPECTED)]
    destination = f"{topics.bind_host}:{topics.ingest_mllp_port}"
    sent = await asyncio.to_thread(
        run_cli, "send", *hl7_files, "--to", destination, env=settings_env(topics)
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    ack_lines = [line for line in sent.stdout.splitlines() if " #1: " in line]
    assert len(ack_lines) == len(hl7_files)
    assert all(": AA " in line for line in ack_lines), sent.stdout

    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
        for name, (status, values, _, _) in FHIR_EXPECTED.items():
            response = await client.post(
                "/fhir",
                content=(CONFORMANCE / "fhir" / name).read_bytes(),
                headers={"Content-Type": "application/fhir+json"},
            )
            assert response.status_code == status, (name, response.text[:500])
            body = response.json()
            if body.get("type") == "batch-response":
                statuses = [e["response"]["status"] for e in body["entry"]]
                published = [status for status in statuses if status == "201 Created"]
            else:
                published = [e for e in body.get("entries", []) if e["outcome"] == "published"]
            assert len(published) == len(values) + FHIR_DIAGNOSES.get(name, 0), name

    servers = topics.kafka_bootstrap_servers or ""
    results = [
        LabResult.model_validate_json(m.value)
        for m in await read_topic(servers, topics.topic(Topic.LAB_RESULTS), count=3)
    ]
    # the NIST CBC over MLLP and again as a FHIR Bundle, and the H&P Bundle
    assert sorted(r.count.value_10e9_per_l for r in results if r.count) == [123.0, 210.0, 210.0]
    assert sorted(r.source for r in results) == ["fhir", "fhir", "hl7v2"]
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in await read_topic(servers, topics.topic(Topic.INGEST_DEADLETTER), count=2)
    ]
    assert [letter.reason_code for letter in letters] == ["no_patient_identifier"] * 2
    ccd = "fhirconverter_CCDA_CCD_bundle_777-3_10e9_per_L_LX.json"
    raw_ccd = (CONFORMANCE / "fhir" / ccd).read_bytes().decode()
    assert raw_ccd in [letter.raw_payload for letter in letters]
