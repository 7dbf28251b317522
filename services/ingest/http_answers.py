"""What ingest answers over HTTP, in each feed's own terms. Pure: no I/O, no framework.

The JSON API answers errors as RFC 9457 problem details (application/problem+json); FHIR
answers them as an OperationOutcome (application/fhir+json), and a batch or transaction Bundle
with a batch-response or transaction-response holding one entry per request entry. No answer
quotes a submitted value: field errors give where and what, never the input.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from services.ingest.fhir import EntryOutcome, parse_fhir_json
from services.ingest.outcomes import Filter, Outcome, Publish, Rejection, RejectReason

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
# What POST /fhir reads; application/json+fhir is the DSTU2 name some senders still use.
FHIR_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
RETRY_AFTER = {"Retry-After": "5"}

Json = dict[str, Any]


@dataclass(frozen=True)
class Answer:
    status: int
    body: Json
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A whole request refused before its content was read: status, a bounded code, words."""

    status: int
    code: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


def unavailable() -> Failure:
    return Failure(
        503,
        "unavailable",
        "the input could not be stored durably (Kafka unavailable); nothing was accepted, "
        "please retry",
        RETRY_AFTER,
    )


def failed() -> Failure:
    return Failure(
        500,
        "internal_error",
        "the input could not be processed (internal error); nothing was acknowledged, please retry",
    )


def body_too_large(size: int | None, limit: int) -> Failure:
    given = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return Failure(413, "too_large", f"body too large ({given}, limit {limit:,} bytes)")


def unsupported_media_type() -> Failure:
    accepted = ", ".join(sorted(FHIR_MEDIA_TYPES))
    return Failure(415, "unsupported_media_type", f"the body must be FHIR JSON ({accepted})")


def status_for(rejection: Rejection) -> HTTPStatus:
    if rejection.reason is RejectReason.MESSAGE_TOO_LARGE:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    return HTTPStatus.UNPROCESSABLE_ENTITY


# --- the JSON API: RFC 9457 problem details -------------------------------------------------


def problem(status: int, code: str, detail: str, **extensions: Any) -> Json:
    """A problem details object; `type` is a tag URI naming the problem, stable for clients."""
    return {
        "type": f"tag:plateletwatch.org,2026:problem/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }


def json_failure(failure: Failure) -> Answer:
    body = problem(failure.status, failure.code, failure.detail, outcome=failure.code)
    return Answer(failure.status, body, PROBLEM_JSON, failure.headers)


def json_answer(outcome: Outcome, dead_letter_id: str | None) -> Answer:
    """202 with what became of the input, or a problem naming each field error."""
    if isinstance(outcome, Publish):
        return Answer(202, {"outcome": "published", "event_id": outcome.event.event_id})
    if isinstance(outcome, Filter):
        return Answer(202, {"outcome": "filtered", "detail": outcome.detail})
    status = status_for(outcome)
    body = problem(
        status,
        outcome.reason.value,
        outcome.message,
        outcome="dead_lettered",
        reason=outcome.reason.value,
        errors=list(outcome.errors),
        dead_letter_id=dead_letter_id,
    )
    return Answer(status, body, PROBLEM_JSON)


# --- FHIR: OperationOutcome and batch-response -----------------------------------------------

_ISSUE_TYPE: dict[RejectReason, str] = {
    RejectReason.INVALID_JSON: "structure",
    RejectReason.INVALID_FHIR: "invalid",
    RejectReason.NO_PATIENT_IDENTIFIER: "required",
    RejectReason.NO_COLLECTION_TIME: "required",
    RejectReason.UNKNOWN_UNIT: "value",
    RejectReason.UNREADABLE_VALUE: "value",
    RejectReason.UNKNOWN_STATUS: "code-invalid",
    RejectReason.MESSAGE_TOO_LARGE: "too-long",
    RejectReason.COULD_NOT_READ: "exception",
}
_FAILURE_ISSUE_TYPE = {
    401: "login",
    404: "not-found",
    405: "not-supported",
    413: "too-long",
    415: "not-supported",
    500: "exception",
    503: "transient",
}


def issue(severity: str, code: str, text: str, expression: str = "") -> Json:
    found: Json = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        found["expression"] = [expression]
    return found


def operation_outcome(issues: Sequence[Json]) -> Json:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def fhir_failure(failure: Failure) -> Answer:
    code = _FAILURE_ISSUE_TYPE.get(failure.status, "processing")
    body = operation_outcome(
        [issue("error" if failure.status < 500 else "fatal", code, failure.detail)]
    )
    return Answer(failure.status, body, FHIR_JSON, failure.headers)


def _rejection_issues(rejection: Rejection, dead_letter_id: str | None) -> list[Json]:
    code = _ISSUE_TYPE.get(rejection.reason, "processing")
    kept = f" (kept as dead letter {dead_letter_id})" if dead_letter_id else ""
    found = [issue("error", code, rejection.message + kept, rejection.location)]
    found += [issue("error", code, error["msg"], error["loc"]) for error in rejection.errors]
    return found


def _entry_issue(entry: EntryOutcome, outcome: Publish | Filter) -> Json:
    """What became of an entry that was not refused, beside the refusals of its input."""
    where = f"Bundle.entry[{entry.index}]" if entry.full_url is not None else ""
    if isinstance(outcome, Publish):
        text = f"published as event {outcome.event.event_id}"
    else:
        text = f"accepted, not used: {outcome.detail}"
    return issue("information", "informational", text, where)


@dataclass(frozen=True)
class BatchRequest:
    """A batch or transaction Bundle as sent: its type and its entries, whatever they hold."""

    type: Literal["batch", "transaction"]
    entries: list[Any]

    @classmethod
    def of(cls, raw: bytes) -> "BatchRequest | None":
        """The Bundle's request entries, or None for anything but a batch or transaction (or a
        body the FHIR reader does not take as JSON either)."""
        try:
            document = parse_fhir_json(raw)
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
            return None
        kind, entries = document.get("type"), document.get("entry", [])
        if kind not in ("batch", "transaction") or not isinstance(entries, list):
            return None
        return cls(kind, entries)

    def answers(self, entries: Sequence[EntryOutcome]) -> bool:
        """Whether `entries` are this Bundle's object entries read one by one (rather than one
        refusal of the whole body)."""
        return len(entries) == sum(isinstance(e, dict) for e in self.entries)


def fhir_answer(
    entries: Sequence[EntryOutcome], dead_letter_id: str | None, batch: BatchRequest | None
) -> Answer:
    """A batch-response or transaction-response (200) for a batch or transaction read entry by
    entry, even when some entries were refused; otherwise 202 with one outcome per entry, or, if
    anything was refused, an OperationOutcome (400 for a body that is not JSON, 413 for a too
    large one, else 422)."""
    if batch is not None and batch.answers(entries):
        return Answer(200, _batch_response(entries, dead_letter_id, batch), FHIR_JSON)
    rejections = [e.outcome for e in entries if isinstance(e.outcome, Rejection)]
    if not rejections:
        return Answer(
            202,
            {
                "outcome": "published"
                if any(isinstance(e.outcome, Publish) for e in entries)
                else "filtered",
                "entries": [_entry_view(entry) for entry in entries],
            },
        )
    issues = [i for r in rejections for i in _rejection_issues(r, dead_letter_id)]
    for entry in entries:
        if isinstance(entry.outcome, Publish | Filter):
            issues.append(_entry_issue(entry, entry.outcome))
    first = rejections[0]
    status = (
        HTTPStatus.BAD_REQUEST if first.reason is RejectReason.INVALID_JSON else status_for(first)
    )
    return Answer(status, operation_outcome(issues), FHIR_JSON)


def _entry_view(entry: EntryOutcome) -> Json:
    view: Json = {
        "index": entry.index,
        "resourceType": entry.resource_type,
        "fullUrl": entry.full_url,
    }
    if isinstance(entry.outcome, Publish):
        return {**view, "outcome": "published", "event_id": entry.outcome.event.event_id}
    assert isinstance(entry.outcome, Filter)
    return {**view, "outcome": "filtered", "detail": entry.outcome.detail}


def _batch_response(
    entries: Sequence[EntryOutcome], dead_letter_id: str | None, batch: BatchRequest
) -> Json:
    """One response entry per request entry, in order; entries that are not objects get 400."""
    read = iter(entries)
    answered: list[Json] = []
    for request_entry in batch.entries:
        if not isinstance(request_entry, dict):
            refused = issue("error", "structure", "Bundle entry is not an object")
            answered.append(_response_entry(HTTPStatus.BAD_REQUEST, operation_outcome([refused])))
            continue
        outcome = next(read).outcome
        if isinstance(outcome, Publish):
            answered.append(_response_entry(HTTPStatus.CREATED))
        elif isinstance(outcome, Filter):
            noted = issue("information", "informational", f"accepted, not used: {outcome.detail}")
            answered.append(_response_entry(HTTPStatus.OK, operation_outcome([noted])))
        else:
            refusal = operation_outcome(_rejection_issues(outcome, dead_letter_id))
            answered.append(_response_entry(status_for(outcome), refusal))
    return {"resourceType": "Bundle", "type": f"{batch.type}-response", "entry": answered}


def _response_entry(status: HTTPStatus, outcome: Json | None = None) -> Json:
    response: Json = {"status": f"{status.value} {status.phrase}"}
    if outcome is not None:
        response["outcome"] = outcome
    return {"response": response}
