"""Per-patient state as the classifier keeps it: the live history and the form last written.

The classifier owns its state store (see the README's "Classifier state"): each patient's
history is one record of a compacted changelog topic, keyed by the patient and written to the
partition of the events it came from. The form last written is kept beside the live history so
that an event the engine cannot apply, or a history that would outgrow the limit, leaves the
patient exactly as the changelog has them. Pure.
"""

import json
from dataclasses import dataclass

from services.classifier.engine import History, shrink


class StateTooLargeError(ValueError):
    """A patient's history would no longer fit in one changelog record."""


def encode(history: History, limit_bytes: int) -> bytes:
    """The changelog record of a history; raises StateTooLargeError past `limit_bytes` (Kafka
    refuses a record over its max.message.bytes, about 1 MB by default)."""
    encoded = history.encoded().encode()  # the JSON of history.to_json(), mostly kept from before
    if len(encoded) > limit_bytes:
        raise StateTooLargeError(
            f"the patient's history would take {len(encoded)} bytes (limit {limit_bytes})"
        )
    return encoded


def encode_within(history: History, limit_bytes: int) -> tuple[bytes, bool]:
    """The changelog record of a history, its oldest half forgotten as often as it takes to fit
    (True: something was forgotten); StateTooLargeError only if even an empty history does not."""
    shrunk = False
    while True:
        try:
            return encode(history, limit_bytes), shrunk
        except StateTooLargeError:
            if not shrink(history):
                raise
            shrunk = True


def decode(stored: bytes) -> History:
    """A history from its changelog record; raises ValueError (or KeyError, TypeError) if the
    record is not one."""
    data = json.loads(stored)
    if not isinstance(data, dict):
        raise ValueError("a patient state record must be a JSON object")
    return History.from_json(data)


@dataclass(slots=True)
class PatientState:
    """One patient's live history and its record as last written to the changelog."""

    history: History
    stored: bytes | None  # None: nothing written yet, the patient is new

    def restored(self) -> "PatientState":
        """The state as the changelog has it, dropping whatever a failed event changed."""
        return PatientState(History() if self.stored is None else decode(self.stored), self.stored)
