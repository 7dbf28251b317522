"""Ingest's public reading API: one function per feed format, raw bytes in, outcomes out. Pure.

Tools that read inputs as the services do (the offline replay) call these, not ingest's feed
modules, which may move. Each returns what the feed's reader returns for the same bytes: one
Outcome per result, treatment or diagnosis held (Publish, Filter or Rejection); none raises on
bad input, which becomes a Rejection with its reason.
"""

from collections.abc import Iterator

from services.ingest.codes import FeedContext
from services.ingest.fhir import read_fhir
from services.ingest.hl7v2.dispatch import read_message
from services.ingest.hl7v2.message import split_messages
from services.ingest.json_context import classify_context
from services.ingest.json_lab import classify_submission
from services.ingest.outcomes import Event, Filter, Outcome, Publish, Rejection, RejectReason
from services.ingest.site import site_context
from services.ingest.treatments import TreatmentTable, load_treatment_table

__all__ = [
    "Event",
    "FeedContext",
    "Filter",
    "Outcome",
    "Publish",
    "RejectReason",
    "Rejection",
    "TreatmentTable",
    "load_treatment_table",
    "read_fhir_json",
    "read_hl7v2",
    "read_json_context",
    "read_json_lab_result",
    "site_context",
]


def read_hl7v2(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> Iterator[Outcome]:
    """Every outcome of every HL7 v2 message in `raw` (messages separated by blank lines, or
    MLLP-framed), in order, one message read at a time; bytes holding no MSH segment give none."""
    for message in split_messages(raw):
        yield from read_message(message, context, treatments).outcomes


def read_fhir_json(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> list[Outcome]:
    """One outcome per entry of a FHIR R4 Bundle, or one for a single resource; an invalid entry
    is a Rejection of its own and never blocks the entries beside it."""
    return [entry.outcome for entry in read_fhir(raw, context, treatments)]


def read_json_lab_result(raw: bytes, context: FeedContext) -> Outcome:
    """The outcome of one body of the plain JSON lab feed."""
    return classify_submission(raw, context)


def read_json_context(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> Outcome:
    """The outcome of one body of the JSON clinical context feed (a treatment or a diagnosis)."""
    return classify_context(raw, context, treatments)
