"""Build the dead letter for a refused input: the raw bytes, exactly as received, and why."""

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from schemas import DeadLetter, stable_event_id
from services.ingest.outcomes import Rejection

Source = Literal["hl7v2", "fhir", "json"]


def dead_letter(
    raw: bytes,
    source: Source,
    rejections: Sequence[Rejection],
    content_type: str | None,
    received_at: datetime,
) -> DeadLetter:
    """One letter per input, naming every problem; text stays text, anything else is base64,
    so a replay gets the very same bytes."""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetter(
        event_id=stable_event_id("dead-letter", source, hashlib.sha256(raw).hexdigest()),
        source=source,
        reason_code=rejections[0].reason.value,
        reason="; ".join(dict.fromkeys(r.message for r in rejections)),
        errors=tuple(error for r in rejections for error in r.errors),
        raw_payload=payload,
        raw_encoding=encoding,
        content_type=content_type,
        received_at=received_at,
    )
