"""Which reader reads an HL7 v2 message, by its type (MSH-9) and version (MSH-12). Pure.

`read_message` checks MSH and hands the message to the reader READERS registers for its type:
ORU^R01 to oru.py, ADT^A08 and ADT^A31 to diagnoses.py, RAS^O17 and RDS^O13 to ras.py; any other
type, an unsupported version or a message without a readable MSH is refused as a whole (AR).
The message is acknowledged AA only when it has no rejection and every event was stored; the
glue (mllp.py) decides the latter.
"""

from collections.abc import Callable
from dataclasses import dataclass

from schemas import LabResult
from services.ingest.codes import FeedContext
from services.ingest.hl7v2.diagnoses import read_adt_diagnoses
from services.ingest.hl7v2.message import Hl7Message, Hl7ParseError, parse
from services.ingest.hl7v2.oru import read_oru
from services.ingest.hl7v2.ras import read_administrations
from services.ingest.outcomes import Outcome, Publish, Rejection, RejectReason
from services.ingest.treatments import TreatmentTable

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})

# The whole message is unacceptable (AR) rather than in error (AE) for these.
_MESSAGE_LEVEL = frozenset(
    {
        RejectReason.UNPARSEABLE_HL7,
        RejectReason.UNSUPPORTED_MESSAGE,
        RejectReason.UNSUPPORTED_VERSION,
    }
)


@dataclass(frozen=True)
class Hl7Result:
    """Everything ingest decided about one message."""

    control_id: str
    outcomes: tuple[Outcome, ...]
    message: Hl7Message | None = None

    @property
    def rejections(self) -> list[Rejection]:
        return [o for o in self.outcomes if isinstance(o, Rejection)]

    @property
    def events(self) -> list[LabResult]:
        return [
            o.event
            for o in self.outcomes
            if isinstance(o, Publish) and isinstance(o.event, LabResult)
        ]

    @property
    def ack_code(self) -> str:
        rejections = self.rejections
        if not rejections:
            return "AA"
        return "AR" if any(r.reason in _MESSAGE_LEVEL for r in rejections) else "AE"


def read_message(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> Hl7Result:
    """Parse and classify one message of an accepted type (READERS); never raises for bad
    input: it becomes a rejection. `treatments` recognises what a pharmacy message gives."""
    try:
        message = parse(raw)
    except Hl7ParseError as error:
        return Hl7Result("", (Rejection(RejectReason.UNPARSEABLE_HL7, str(error), location="MSH"),))
    msh = message.msh
    control_id = msh.get(10)
    message_type = (msh.get(9, 1), msh.get(9, 2))
    reader = READERS.get(message_type)
    if reader is None:
        accepted = ", ".join("^".join(kind) for kind in READERS)
        text = f"only {accepted} are accepted, not {'^'.join(message_type)[:20]}"
        return Hl7Result(
            control_id,
            (Rejection(RejectReason.UNSUPPORTED_MESSAGE, text, location="MSH-9"),),
            message,
        )
    version = msh.get(12)
    if version not in SUPPORTED_VERSIONS:
        text = f"HL7 version {version[:20]!r} is not supported (2.3 to 2.5.1 are)"
        return Hl7Result(
            control_id,
            (Rejection(RejectReason.UNSUPPORTED_VERSION, text, location="MSH-12"),),
            message,
        )
    return Hl7Result(control_id, tuple(reader(message, context, treatments)), message)


def _oru(message: Hl7Message, context: FeedContext, _: TreatmentTable) -> list[Outcome]:
    return read_oru(message, context)


def _adt(message: Hl7Message, context: FeedContext, _: TreatmentTable) -> list[Outcome]:
    return read_adt_diagnoses(message, context)


Reader = Callable[[Hl7Message, FeedContext, TreatmentTable], list[Outcome]]
# The reader of each accepted MSH-9 message type and trigger event; any other is refused (AR).
READERS: dict[tuple[str, str], Reader] = {
    ("ORU", "R01"): _oru,
    ("ADT", "A08"): _adt,
    ("ADT", "A31"): _adt,
    ("RAS", "O17"): read_administrations,
    ("RDS", "O13"): read_administrations,
}
