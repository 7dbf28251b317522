"""No patient data in ingest's logs, or quoted back in its refusals: bodies carrying a planted
name, MRN and birth date, valid and broken in several ways, go through every ingest surface
(JSON and FHIR over a real HTTP server, HL7 v2 over MLLP), publishing to the real broker, while
every log record is captured."""

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from services.ingest.hl7v2.mllp import MllpLimits, MllpServer, send_messages
from services.ingest.http_api import create_app
from services.ingest.pipeline import IngestPipeline
from services.ingest.treatments import load_treatment_table
from services.kafka.client_logs import keep_patient_data_out_of_client_logs
from tests.conftest import AUTH, REPO, Kafka
from tests.test_fhir import observation
from tests.test_hl7 import MSH, OBR, message, platelet_obx

# Planted where a patient's identity goes: never logged, never quoted back.
NAME, SURNAME, MRN, BIRTH = "Zelda", "Plantedname", "MRN-PLANTED-991", "1931-02-30"
IDENTITY = (SURNAME, SURNAME.upper(), MRN, BIRTH, BIRTH.replace("-", ""))
# Planted in values, units, statuses and headers: never logged (a refusal may name a bad unit).
VALUE, UNIT, STATUS, SENDER = "Value-Planted", "Unit-Planted", "Status-Planted", "Sender-Planted"
ELSEWHERE = (VALUE, UNIT, STATUS, SENDER)


LOINC_PLT = {"system": "http://loinc.org", "code": "777-3"}


def fhir_patient(birth: str = BIRTH) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": SURNAME, "given": [NAME]}],
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": "urn:oid:2.16.840.1.113883.19.5",
                "value": MRN,
            }
        ],
        "birthDate": birth,
    }


def fhir_bodies() -> list[bytes]:
    def of(*resources: dict[str, Any], kind: str = "collection") -> bytes:
        entries = [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(resources)]
        return json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}).encode()

    return [
        of(fhir_patient(), observation()),
        of(fhir_patient(), observation(), kind="batch"),
        of(fhir_patient("1931-02-03"), observation(valueQuantity={"value": VALUE, "unit": UNIT})),
        of(fhir_patient(), observation(code="x")),
        of(
            fhir_patient(), observation(subject={"reference": f"Patient/{MRN}", "display": SURNAME})
        ),
        of({**fhir_patient(), "name": SURNAME}, observation(status=STATUS)),
        # measured: pydantic's input_value (this name) reached the log in a traceback
        of(
            fhir_patient(), observation(code={"coding": [{**LOINC_PLT, "display": {"n": SURNAME}}]})
        ),
        json.dumps({**fhir_patient(), "resourceType": "Observation"}).encode(),
        b'{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": "'
        + MRN.encode()
        + b"}",
    ]


def json_bodies() -> list[bytes]:
    example = json.loads((REPO / "examples" / "lab-result-critical.json").read_text())
    patient = {"identifier": {"authority": "GENHOSP", "mrn": MRN}, "birth_date": BIRTH}
    return [
        json.dumps({**example, "patient": patient}).encode(),
        json.dumps({**example, "patient": patient, "name": SURNAME, "unit": UNIT}).encode(),
        json.dumps(
            {**example, "patient": {**patient, "birth_date": "1931-02-03"}, "value": VALUE}
        ).encode(),
        json.dumps(
            {"patient": patient, "context_id": MRN, "name": SURNAME, "started_at": BIRTH}
        ).encode(),
        b'{"patient": {"identifier": {"mrn": "' + MRN.encode() + b'"',
    ]


def hl7_messages() -> list[bytes]:
    pid = f"PID|1||{MRN}^^^GENHOSP^MR||{SURNAME.upper()}^{NAME.upper()}||{BIRTH.replace('-', '')}|F"
    return [
        message(platelet_obx(), pid=pid),
        message(platelet_obx(unit=UNIT), pid=pid),
        message(platelet_obx(obx14="20261125074000+2400"), pid=pid),
        message(platelet_obx(value=VALUE), pid=pid, obr=OBR.replace("FL-77", MRN)),
        message(platelet_obx(), pid=pid, msh=MSH.replace("ORU^R01", "ADT^A01")),
        f"MSH|^~\\&|{SENDER}".encode(),
    ]


@pytest.fixture
async def servers(kafka: Kafka) -> AsyncIterator[tuple[str, int]]:
    """Ingest's HTTP app on a real loopback server and its MLLP server, both in this process."""
    settings = kafka.settings
    pipeline = IngestPipeline(settings, kafka.publisher)

    async def nothing() -> None:
        return None

    app = create_app(settings, pipeline, load_treatment_table(), nothing, nothing)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="debug"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, offers no event
        await asyncio.sleep(0.01)
    limits = MllpLimits(1_048_576, 60, 30, 8)
    mllp = MllpServer(pipeline, "127.0.0.1", 0, limits, load_treatment_table())
    await mllp.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", mllp.port
    await mllp.stop()
    server.should_exit = True
    await serving


@pytest.mark.integration
async def test_no_planted_identifier_reaches_a_log_or_a_refusal(
    servers: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keep_patient_data_out_of_client_logs()  # as every service does at start
    base, mllp_port = servers
    answers: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
        for path, body in [("/v1/lab-results", b) for b in json_bodies()] + [
            ("/v1/clinical-context", json_bodies()[3])
        ]:
            response = await client.post(path, content=body)
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                answers.append(response.text)
        for body in fhir_bodies():
            response = await client.post(
                "/fhir", content=body, headers={"Content-Type": "application/fhir+json"}
            )
            assert response.status_code < 500, response.text
            if response.status_code != 202:
                answers.append(response.text)
    for raw in hl7_messages():
        (ack,) = await send_messages("127.0.0.1", mllp_port, [raw], 10)
        answers.append(ack.decode())
    assert len(answers) >= 12
    assert caplog.records, "the logs were captured"
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records
    )
    assert [planted for planted in IDENTITY + ELSEWHERE if planted in logged] == []
    echoed = [(planted, answer) for planted in IDENTITY for answer in answers if planted in answer]
    assert echoed == [], "\n".join(f"{p}: {a[:400]!r}" for p, a in echoed)
