"""A laboratory system as the chaos run needs one: each patient gets one critical platelet count,
sent until ingest accepts it, as a real lab resends until acknowledged.

Even-numbered patients go as the project's JSON over HTTP, odd-numbered ones as HL7 v2 ORU^R01
over MLLP, so both feeds are killed mid-conversation. A 503, an AR (HL7 v2.5 ch. 2: the system
is down, resend later), a refused or broken connection or a timeout means "send again"; a
refusal of the content itself (4xx, AE) means the harness built a bad message and raises
LabRefused rather than retry forever. The patients are
made up: their MRNs are CHAOS-<number>.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from chaos import ChaosFailure
from services.ingest.hl7v2.mllp import send_messages

RESEND_AFTER_SECONDS = 0.5
_AUTHORITY = "urn:oid:2.16.840.1.113883.19.5"


class LabRefused(ChaosFailure):
    """Ingest refused what the lab sent for a reason no resend can fix."""


def mrn(patient: int) -> str:
    return f"CHAOS-{patient:06d}"


def critical_value(patient: int) -> int:
    """Below 20 x10^9/L, so every patient must be paged."""
    return 3 + patient % 15


@dataclass(frozen=True)
class Ingest:
    http_url: str  # base URL of the HTTP feeds
    mllp_host: str
    mllp_port: int
    token: str


def json_result(patient: int, collected: datetime, number: int = 1) -> dict[str, object]:
    """The patient's `number`th critical count as a JSON body. It names the patient as the lab's
    first result did: odd patients came by HL7 v2, whose PID-3.4 gives the authority GENHOSP;
    another authority would be another patient to the classifier."""
    authority = "GENHOSP" if patient % 2 else _AUTHORITY
    return {
        "patient": {"identifier": {"authority": authority, "mrn": mrn(patient)}},
        "result_id": f"CHAOS-{patient:06d}-PLT" + (f"-{number}" if number > 1 else ""),
        "code": {"system": "http://loinc.org", "code": "777-3"},
        "value": str(critical_value(patient)),
        "unit": "10*9/L",
        "status": "final",
        "collected_at": collected.isoformat(),
        "verified_at": (collected + timedelta(minutes=20)).isoformat(),
    }


def _oru(patient: int, collected: datetime) -> bytes:
    when = collected.strftime("%Y%m%d%H%M%S+0000")
    return (
        f"MSH|^~\\&|LIS|GENHOSP|PW|PW|{when}||ORU^R01^ORU_R01|CHAOS{patient}|P|2.5.1\r"
        f"PID|1||{mrn(patient)}^^^GENHOSP&{_AUTHORITY[8:]}&ISO^MR||DOE^JANE||19600407|F\r"
        f"OBR|1|PL-C{patient}^EHR|FL-C{patient}^LAB|58410-2^CBC^LN|||{when}\r"
        f"OBX|1|NM|777-3^Platelets^LN||{critical_value(patient)}|10*9/L|150-400|LL|||F\r"
    ).encode()


async def _send_json(client: httpx.AsyncClient, ingest: Ingest, patient: int) -> bool:
    collected = datetime.now(UTC) - timedelta(hours=1)
    return await post_json(client, ingest, json_result(patient, collected), patient)


async def post_json(
    client: httpx.AsyncClient, ingest: Ingest, body: dict[str, object], patient: int
) -> bool:
    """POST one JSON result: True once stored, False to send again (ingest down or busy);
    LabRefused when ingest refuses it for good."""
    try:
        answer = await client.post(
            f"{ingest.http_url}/v1/lab-results",
            json=body,
            headers={"Authorization": f"Bearer {ingest.token}"},
        )
    except httpx.HTTPError:
        return False
    if answer.status_code == 202:
        return True
    if answer.status_code >= 500:
        return False
    raise LabRefused(f"HTTP {answer.status_code} for patient {patient}: {answer.text[:300]}")


async def _send_hl7(ingest: Ingest, patient: int) -> bool:
    collected = datetime.now(UTC) - timedelta(hours=1)
    try:
        (ack,) = await send_messages(
            ingest.mllp_host, ingest.mllp_port, [_oru(patient, collected)], timeout_seconds=20
        )
    except (OSError, TimeoutError):  # refused, reset or closed connections are OSErrors
        return False
    if b"MSA|AA|" in ack:
        return True
    if b"MSA|AR|" in ack:
        return False
    raise LabRefused(f"ACK {ack[:300]!r} for patient {patient}")


async def send_until_accepted(client: httpx.AsyncClient, ingest: Ingest, patient: int) -> int:
    """Send this patient's result until ingest has stored it; return how many sends it took."""
    sends = 1
    while not await (
        _send_hl7(ingest, patient) if patient % 2 else _send_json(client, ingest, patient)
    ):
        sends += 1
        await asyncio.sleep(RESEND_AFTER_SECONDS)
    return sends


async def send_all(ingest: Ingest, patients: int, over_seconds: float) -> list[int]:
    """Start one patient's sending every `over_seconds / patients` seconds; wait for them all.

    Returns the number of sends each patient took. A LabRefused stops every sender."""
    interval = over_seconds / max(1, patients)
    async with httpx.AsyncClient(timeout=20) as client:
        try:
            async with asyncio.TaskGroup() as senders:
                tasks = []
                for patient in range(patients):
                    tasks.append(senders.create_task(send_until_accepted(client, ingest, patient)))
                    await asyncio.sleep(interval)
        except ExceptionGroup as refusals:
            raise refusals.exceptions[0] from None
    return [task.result() for task in tasks]
