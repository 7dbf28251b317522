"""The dead letter of an event the classifier could not apply: the event as read, and why. Pure.

One poisonous patient must not silence the others: an event that cannot be decoded, that the
engine cannot apply, or that would grow the patient's history past its limit is set aside on
classifier.deadletter.v1 and the worker goes on. The letter keeps the raw event (cut at
RAW_BYTES_KEPT, with its full size and SHA-256, so a letter always fits in a Kafka record).
"""

import hashlib
from datetime import datetime

from schemas import DeadLetter, stable_event_id

RAW_BYTES_KEPT = 64_000  # JSON-escaped at worst six-fold: the letter stays well below 1 MB


def classifier_dead_letter(
    raw: bytes, topic: str, reason_code: str, reason: str, received_at: datetime
) -> DeadLetter:
    """The letter for one refused event read from `topic`."""
    digest = hashlib.sha256(raw).hexdigest()
    kept = raw[:RAW_BYTES_KEPT]
    if len(kept) < len(raw):
        reason += f" (event cut to its first {len(kept)} of {len(raw)} bytes; sha256 {digest})"
    payload, encoding = DeadLetter.payload_of(kept)
    return DeadLetter(
        event_id=stable_event_id("classifier-dead-letter", topic, digest, reason_code),
        source="classifier",
        reason_code=reason_code,
        reason=f"{reason} [from {topic}]",
        raw_payload=payload,
        raw_encoding=encoding,
        content_type="application/json",
        received_at=received_at,
    )
