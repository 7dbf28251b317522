"""Build the dead letter for a refused input: the raw bytes, exactly as received, and why.

An input too large for Kafka to hold whole (or too large to have been read whole) is kept as its
first bytes, with its full size and SHA-256 in the reason text and in the record's headers
(`raw-size`, `raw-sha256`), so the sender's copy can still be found and matched.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas import DeadLetter, Source, stable_event_id
from services.ingest.outcomes import Rejection

# What a dead letter keeps of an input too large to keep whole.
KEPT_BYTES_WHEN_TOO_LARGE = 64 * 1024


@dataclass(frozen=True)
class RawInput:
    """An input as received: all its bytes, or the first ones of one too large to read whole."""

    data: bytes
    size: int
    sha256: str

    @classmethod
    def whole(cls, raw: bytes) -> "RawInput":
        return cls(raw, len(raw), hashlib.sha256(raw).hexdigest())

    def first(self, count: int) -> "RawInput":
        return RawInput(self.data[:count], self.size, self.sha256)

    @property
    def headers(self) -> dict[str, str]:
        """Kafka record headers naming the whole input, whatever part of it the letter holds."""
        return {"raw-size": str(self.size), "raw-sha256": self.sha256}


def dead_letter(
    raw: bytes | RawInput,
    source: Source,
    rejections: Sequence[Rejection],
    content_type: str | None,
    received_at: datetime,
) -> DeadLetter:
    """One letter per input, naming every problem; text stays text, anything else is base64,
    so a replay gets the very same bytes. A partial input says so in the reason."""
    received = raw if isinstance(raw, RawInput) else RawInput.whole(raw)
    payload, encoding = DeadLetter.payload_of(received.data)
    reason = "; ".join(dict.fromkeys(r.message for r in rejections))
    if len(received.data) < received.size:
        reason += (
            f" [kept the first {len(received.data):,} of {received.size:,} bytes;"
            f" sha256 of the whole input {received.sha256}]"
        )
    return DeadLetter(
        event_id=stable_event_id("dead-letter", source, received.sha256),
        source=source,
        reason_code=rejections[0].reason.value,
        reason=reason,
        errors=tuple(error for r in rejections for error in r.errors),
        raw_payload=payload,
        raw_encoding=encoding,
        content_type=content_type,
        received_at=received_at,
    )
