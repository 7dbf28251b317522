"""Build the dead letter for a refused input: the raw bytes, exactly as received, and why."""

import base64
import hashlib
from datetime import datetime
from typing import Literal

from schemas import DeadLetter, stable_event_id
from services.ingest.json_feed import Rejection


def dead_letter(
    raw: bytes,
    source: Literal["hl7v2", "fhir", "json"],
    rejection: Rejection,
    content_type: str | None,
    received_at: datetime,
) -> DeadLetter:
    """Keep text as text and anything else as base64, so a replay gets the very same bytes."""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetter(
        event_id=stable_event_id("dead-letter", source, hashlib.sha256(raw).hexdigest()),
        source=source,
        reason_code=rejection.reason.value,
        reason=rejection.message,
        errors=rejection.errors,
        raw_payload=payload,
        raw_encoding=encoding,
        content_type=content_type,
        received_at=received_at,
    )
