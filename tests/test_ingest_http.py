"""Ingest's HTTP answers (the app in-process, publishing to the real broker): RFC 9457 problem
details on the JSON API, OperationOutcome and batch-response on FHIR, the body limit, results too
large to store, 503 only once the broker is gone, and no 500 whatever a reader does with a body."""

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from schemas import Topic
from services.ingest.http_api import create_app
from services.ingest.pipeline import IngestPipeline
from services.ingest.treatments import load_treatment_table
from tests.conftest import AUTH, REPO, Kafka
from tests.test_fhir import PATIENT, bundle, observation

EXAMPLE = (REPO / "examples" / "lab-result-critical.json").read_bytes()
FHIR = {**AUTH, "Content-Type": "application/fhir+json"}

pytestmark = pytest.mark.integration


@dataclass
class Ingest:
    client: httpx.AsyncClient
    kafka: Kafka


async def _none() -> None:
    return None


@contextlib.asynccontextmanager
async def serving(kafka: Kafka) -> AsyncIterator[Ingest]:
    """The ingest app, with a 2 MB body limit, publishing through `kafka`."""
    settings = kafka.settings.model_copy(update={"ingest_http_max_body_bytes": 2_000_000})
    pipeline = IngestPipeline(settings, kafka.publisher)
    app = create_app(settings, pipeline, load_treatment_table(), _none, _none)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
        yield Ingest(client, kafka)


@pytest.fixture
async def ingest(kafka: Kafka) -> AsyncIterator[Ingest]:
    async with serving(kafka) as started:
        yield started


@pytest.fixture
async def ingest_to_lose(kafka_to_lose: Kafka) -> AsyncIterator[Ingest]:
    """Ingest on the test's own broker, for `lose_broker()` to take away."""
    async with serving(kafka_to_lose) as started:
        yield started


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def is_outcome(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = body["issue"]
    assert issues
    return issues


# --- the JSON API ----------------------------------------------------------------------------


async def test_a_refused_lab_result_is_a_problem_naming_fields_without_values(
    ingest: Ingest,
) -> None:
    body = json.loads(EXAMPLE)
    body["collected_at"] = "Zelda-not-a-time"
    body["patient"]["birth_date"] = "1931-02-30"
    response = await ingest.client.post("/v1/lab-results", json=body, headers=AUTH)
    problem = is_problem(response, 422)
    assert problem["reason"] == "invalid_fields"
    assert {e["loc"] for e in problem["errors"]} == {"patient.birth_date", "collected_at"}
    assert all(set(e) == {"loc", "msg", "type"} for e in problem["errors"])
    assert "Zelda" not in response.text
    assert "1931-02-30" not in response.text
    (letter,) = await ingest.kafka.dead_letters()
    assert problem["dead_letter_id"] == letter.event_id


@pytest.mark.one_broker(reason="loses a Tansu broker of its own; the session broker plays no part")
async def test_json_errors_are_problems_401_503_and_accepted_stays_202(
    ingest_to_lose: Ingest, lose_broker: Callable[[], None]
) -> None:
    ingest = ingest_to_lose
    unauthorised = await ingest.client.post("/v1/clinical-context", content=b"{}")
    assert is_problem(unauthorised, 401)
    assert unauthorised.headers["WWW-Authenticate"] == "Bearer"
    accepted = await ingest.client.post("/v1/lab-results", content=EXAMPLE, headers=AUTH)
    assert (accepted.status_code, accepted.json()["outcome"]) == (202, "published")
    lose_broker()
    down = await ingest.client.post("/v1/lab-results", content=EXAMPLE, headers=AUTH)
    assert "retry" in is_problem(down, 503)["detail"]
    assert down.headers["Retry-After"] == "5"


async def test_a_1_mb_field_is_refused_for_good_and_dead_lettered_in_part(
    ingest: Ingest,
) -> None:
    """Measured: a 1.1 MB field got 503 'please retry' for ever (more than Kafka takes). Ids
    are bounded now: 422 naming the field, never 'retry', and the body's first 64 kB kept."""
    huge = EXAMPLE.replace(b"LAB-2026-000123-PLT", b"L" * 1_100_000)
    response = await ingest.client.post("/v1/lab-results", content=huge, headers=AUTH)
    problem = is_problem(response, 422)
    assert [error["loc"] for error in problem["errors"]] == ["result_id"]
    assert "retry" not in problem["detail"]
    assert await ingest.kafka.records(Topic.LAB_RESULTS) == []
    (letter,) = await ingest.kafka.dead_letters()
    assert len(letter.raw_payload) == 64 * 1024
    assert f"{len(huge):,} bytes" in letter.reason


@pytest.mark.parametrize("path", ["/v1/lab-results", "/fhir"])
async def test_a_body_over_the_limit_is_413_before_it_is_read(ingest: Ingest, path: str) -> None:
    """Measured: a 20 MB body was accepted and read whole."""
    headers = {**FHIR, "Content-Length": "20000000"}
    declared = await ingest.client.post(path, content=b"{}", headers=headers)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    streamed = await ingest.client.post(path, content=stream(), headers=FHIR)
    if path == "/fhir":
        (issue,) = is_outcome(declared, 413)
        assert issue["code"] == "too-long"
        assert "20,000,000 bytes, limit 2,000,000 bytes" in issue["diagnostics"]
        is_outcome(streamed, 413)
    else:
        assert "20,000,000 bytes" in is_problem(declared, 413)["detail"]
        assert "more than 2,000,000 bytes" in is_problem(streamed, 413)["detail"]


async def test_a_json_reader_that_fails_is_a_422_problem_and_dead_lettered(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(raw: bytes, context: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr("services.ingest.http_api.classify_submission", crash)
    response = await ingest.client.post("/v1/lab-results", content=EXAMPLE, headers=AUTH)
    assert is_problem(response, 422)["reason"] == "could_not_read"
    letters = await ingest.kafka.dead_letters()
    assert [letter.raw_payload.encode() for letter in letters] == [EXAMPLE]


# --- FHIR ------------------------------------------------------------------------------------


def refused_observation() -> dict[str, Any]:
    return observation(id="plt-2", valueQuantity={"value": 12, "unit": "mg/dL"})


@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_a_partly_refused_batch_is_a_200_batch_response_entry_by_entry(
    ingest: Ingest, kind: str
) -> None:
    document = bundle(PATIENT, observation(), refused_observation(), kind=kind)
    document["entry"].insert(1, "not an entry")
    response = await ingest.client.post("/fhir", json=document, headers=FHIR)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["resourceType"], answer["type"]) == ("Bundle", f"{kind}-response")
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert statuses == ["200 OK", "400 Bad Request", "201 Created", "422 Unprocessable Entity"]
    refusal = answer["entry"][3]["response"]["outcome"]
    assert refusal["resourceType"] == "OperationOutcome"
    assert refusal["issue"][0]["code"] == "value"
    assert "mg/dL" in refusal["issue"][0]["diagnostics"]
    assert len(await ingest.kafka.records(Topic.LAB_RESULTS)) == 1
    assert len(await ingest.kafka.dead_letters()) == 1


async def test_a_large_batch_with_one_refused_entry_is_answered_and_kept_in_part(
    ingest: Ingest,
) -> None:
    """Measured: a >1 MB Bundle with one refused entry got 503 'please retry' for ever."""
    filler = [
        {"resourceType": "Basic", "id": f"b{i}", "code": {"text": "x" * 900}} for i in range(1200)
    ]
    document = bundle(PATIENT, observation(), refused_observation(), *filler, kind="batch")
    raw = json.dumps(document).encode()
    assert len(raw) > 1_048_576
    response = await ingest.client.post("/fhir", content=raw, headers=FHIR)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["entry"][2]["response"]["status"] == "422 Unprocessable Entity"
    (letter,) = await ingest.kafka.dead_letters()
    assert len(letter.raw_payload) == 64 * 1024


async def test_a_collection_keeps_202_and_its_refusals_are_an_operation_outcome(
    ingest: Ingest,
) -> None:
    accepted = await ingest.client.post("/fhir", json=bundle(PATIENT, observation()), headers=FHIR)
    assert accepted.status_code == 202
    assert [e["outcome"] for e in accepted.json()["entries"]] == ["filtered", "published"]
    refused = await ingest.client.post(
        "/fhir", json=bundle(PATIENT, refused_observation()), headers=FHIR
    )
    issues = is_outcome(refused, 422)
    assert [i["severity"] for i in issues] == ["error", "information"]
    (letter,) = await ingest.kafka.dead_letters()
    assert letter.event_id in issues[0]["diagnostics"]


@pytest.mark.one_broker(reason="loses a Tansu broker of its own; the session broker plays no part")
async def test_fhir_errors_are_operation_outcomes(
    ingest_to_lose: Ingest, lose_broker: Callable[[], None]
) -> None:
    ingest = ingest_to_lose
    not_json = await ingest.client.post("/fhir", content=b"{", headers=FHIR)
    assert is_outcome(not_json, 400)[0]["code"] == "structure"
    unauthorised = await ingest.client.post("/fhir", content=b"{}")
    assert is_outcome(unauthorised, 401)[0]["code"] == "login"
    assert unauthorised.headers["WWW-Authenticate"] == "Bearer"
    xml = {**AUTH, "Content-Type": "application/fhir+xml"}
    assert is_outcome(await ingest.client.post("/fhir", content=b"<x/>", headers=xml), 415)
    lose_broker()
    down = await ingest.client.post("/fhir", json=bundle(PATIENT, observation()), headers=FHIR)
    assert is_outcome(down, 503)[0]["code"] == "transient"
    assert down.headers["Retry-After"] == "5"


async def test_a_batch_the_reader_refuses_as_json_is_400_not_a_batch_response(
    ingest: Ingest,
) -> None:
    """NaN is not JSON to the FHIR reader; the batch answer must not read it as JSON either
    (it did: 200 with the one entry 'refused', for a body never read entry by entry)."""
    document = bundle(PATIENT, kind="batch")
    body = json.dumps(document).replace('"Bundle"', '"Bundle", "total": NaN').encode()
    answered = await ingest.client.post("/fhir", content=body, headers=FHIR)
    assert is_outcome(answered, 400)[0]["code"] == "structure"


def _mutated(path: str, value: Any) -> bytes:
    document = bundle(PATIENT, observation())
    target: Any = document
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return json.dumps(document).encode()


MEASURED_500S = {
    '"type":[]': _mutated("type", []),
    '"entry":5': _mutated("entry", 5),
    '"resource":[1]': _mutated("entry.1.resource", [1]),
    '"code":"x"': _mutated("entry.1.resource.code", "x"),
    '"coding":"777-3"': _mutated("entry.1.resource.code.coding", "777-3"),
    "display as an object": _mutated("entry.1.resource.code.coding.0.display", {"a": 1}),
    "1,000 nested [": b'{"resourceType":"Bundle","type":"batch","entry":'
    + b"[" * 1000
    + b"]" * 1000
    + b"}",
    "a lone \\ud800 in fullUrl": _mutated("entry.1.fullUrl", "urn:uuid:x").replace(
        b"urn:uuid:x", b"urn:uuid:\\ud800"
    ),
}


@pytest.mark.parametrize("name", sorted(MEASURED_500S))
async def test_bodies_that_gave_500_get_a_fhir_answer(ingest: Ingest, name: str) -> None:
    response = await ingest.client.post("/fhir", content=MEASURED_500S[name], headers=FHIR)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        is_outcome(response, response.status_code)
        assert await ingest.kafka.dead_letters(), "a refused body is dead-lettered"


async def test_a_fhir_reader_that_fails_is_a_422_outcome_and_dead_lettered(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(raw: bytes, context: object, treatments: object) -> None:
        raise RecursionError

    monkeypatch.setattr("services.ingest.http_api.read_fhir", crash)
    raw = json.dumps(bundle(PATIENT, observation())).encode()
    (issue,) = is_outcome(await ingest.client.post("/fhir", content=raw, headers=FHIR), 422)
    assert (issue["code"], issue["severity"]) == ("exception", "error")
    assert "could not be read" in issue["diagnostics"]
    letters = await ingest.kafka.dead_letters()
    assert [letter.raw_payload.encode() for letter in letters] == [raw]
