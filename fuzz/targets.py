"""The readers under fuzz, and what each must do with any input: answer, never raise. Pure.

A reader passes when it returns outcomes (Publish, Filter, Rejection) and everything ingest does
next with them works too: every event survives the JSON round trip the classifier makes, every
refusal can be dead-lettered and rendered as JSON (and, for HL7, as an ACK). Anything else, an
exception from the reader or from those next steps, is a crash.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from schemas import Source
from services.ingest.codes import FeedContext
from services.ingest.deadletter import dead_letter
from services.ingest.fhir import read_fhir
from services.ingest.hl7v2.ack import build_ack
from services.ingest.hl7v2.dispatch import read_message
from services.ingest.json_context import classify_context
from services.ingest.json_lab import classify_submission
from services.ingest.outcomes import Filter, Outcome, Publish, Rejection
from services.ingest.treatments import load_treatment_table

_RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
# Two sites, so both the bare-reference and the refuse-without-identifier paths are reached.
_CONTEXTS = (
    FeedContext(
        received_at=_RECEIVED,
        local_zone=ZoneInfo("Europe/Paris"),
        local_platelet_codes=frozenset({("99LOC", "PLT")}),
        fhir_reference_authority="https://ehr.example",
    ),
    FeedContext(received_at=_RECEIVED, local_zone=ZoneInfo("America/New_York")),
)
_TREATMENTS = load_treatment_table()


class BrokenAnswer(AssertionError):
    """A reader returned something ingest cannot use (not an outcome, or an event that does
    not survive the round trip)."""


@dataclass(frozen=True)
class Target:
    name: str
    structure: Literal["hl7", "json"]
    source: Source
    read: Callable[[bytes, FeedContext], Sequence[Outcome]]


def _read_hl7(raw: bytes, context: FeedContext) -> Sequence[Outcome]:
    result = read_message(raw, context, _TREATMENTS)
    build_ack(result, result.ack_code, result.rejections, context.received_at)
    return result.outcomes


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("hl7", "hl7", "hl7v2", _read_hl7),
        Target(
            "fhir",
            "json",
            "fhir",
            lambda raw, ctx: [e.outcome for e in read_fhir(raw, ctx, _TREATMENTS)],
        ),
        Target("json", "json", "json", lambda raw, ctx: [classify_submission(raw, ctx)]),
        Target(
            "context",
            "json",
            "json",
            lambda raw, ctx: [classify_context(raw, ctx, _TREATMENTS)],
        ),
    )
}


def run_one(target: Target, raw: bytes) -> None:
    """Read one input and check the answer; raise (a crash) if either goes wrong."""
    context = _CONTEXTS[len(raw) % len(_CONTEXTS)]
    outcomes = target.read(raw, context)
    rejections = []
    for outcome in outcomes:
        if isinstance(outcome, Publish):
            event = outcome.event
            if type(event).model_validate_json(event.model_dump_json()) != event:
                raise BrokenAnswer(f"{type(event).__name__} changed in its JSON round trip")
        elif isinstance(outcome, Rejection):
            rejections.append(outcome)
            view = {"detail": outcome.message, "errors": list(outcome.errors)}
            json.dumps(view, ensure_ascii=False).encode("utf-8")
        elif not isinstance(outcome, Filter):
            raise BrokenAnswer(f"not an outcome: {type(outcome).__name__}")
    if rejections:
        letter = dead_letter(raw, target.source, rejections, None, context.received_at)
        letter.model_dump_json()
