"""The HL7 v2 ACK that answers a message: MSA with the acknowledgment code, one ERR per problem.

Pure. `ack_code` decides AA, AE or AR (HL7 v2.5 chapter 2, original mode; see mllp.py). The
ACK echoes the message's delimiters, sender and version when its MSH was readable, else uses
the defaults (|^~\\& and 2.5.1); text placed in a field is stripped of delimiters and line
breaks, so whatever a problem quotes cannot break the ACK's structure.
"""

from collections.abc import Sequence
from datetime import datetime

from services.ingest.hl7v2.dispatch import Hl7Result
from services.ingest.hl7v2.message import parse
from services.ingest.outcomes import Rejection, RejectReason

# HL7 table 0357 message error condition codes used in ERR-3.
ERROR_CODES: dict[RejectReason, tuple[str, str]] = {
    RejectReason.UNPARSEABLE_HL7: ("100", "Segment sequence error"),
    RejectReason.NO_PATIENT_IDENTIFIER: ("101", "Required field missing"),
    RejectReason.NO_COLLECTION_TIME: ("101", "Required field missing"),
    RejectReason.UNREADABLE_VALUE: ("102", "Data type error"),
    RejectReason.INVALID_FIELDS: ("102", "Data type error"),
    RejectReason.UNKNOWN_UNIT: ("103", "Table value not found"),
    RejectReason.UNKNOWN_STATUS: ("103", "Table value not found"),
    RejectReason.UNSUPPORTED_MESSAGE: ("200", "Unsupported message type"),
    RejectReason.UNSUPPORTED_VERSION: ("203", "Unsupported version id"),
    RejectReason.MESSAGE_TOO_LARGE: ("207", "Application internal error"),
    RejectReason.STORE_UNAVAILABLE: ("207", "Application internal error"),
}


def ack_code(result: Hl7Result, refused: Sequence[Rejection]) -> str:
    """AR if the message as such was not accepted, AE if any of its content was refused
    (`refused`: including results refused only when storing them), else AA."""
    if result.ack_code == "AR":
        return "AR"
    return "AE" if refused else "AA"


def refused_whole(raw: bytes, rejection: Rejection) -> Hl7Result:
    """The message as far as its MSH can be read (for the ACK's header), refused as a whole."""
    try:
        message = parse(raw)
        return Hl7Result(message.msh.get(10), (rejection,), message)
    except Exception:  # no readable MSH: the ACK carries no control id
        return Hl7Result("", (rejection,))


def build_ack(result: Hl7Result, code: str, problems: list[Rejection], now: datetime) -> bytes:
    """An ACK for the message: MSA with `code`, and one ERR per problem (v2.5 layout)."""
    message = result.message
    d = message.delimiters if message else None
    field_sep, comp = (d.field, d.component) if d else ("|", "^")
    encoding = f"{d.component}{d.repetition}{d.escape}{d.subcomponent}" if d else "^~\\&"
    msh = message.msh if message else None
    sending = (msh.raw(5), msh.raw(6), msh.raw(3), msh.raw(4)) if msh else ("", "", "", "")
    version = msh.raw(12) if msh else "2.5.1"
    control_id = result.control_id
    trigger = _clean(msh.get(9, 2), field_sep)[:3] if msh else ""
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    segments = [
        field_sep.join(
            [
                "MSH",
                encoding,
                sending[0],
                sending[1],
                sending[2],
                sending[3],
                stamp,
                "",
                f"ACK{comp}{trigger or 'R01'}{comp}ACK",
                f"ACK{now:%Y%m%d%H%M%S%f}"[:20],
                "P",
                version,
            ]
        ),
        field_sep.join(["MSA", code, control_id, _ack_text(problems)]),
    ]
    for problem in problems:
        error_code, error_text = ERROR_CODES.get(
            problem.reason, ("207", "Application internal error")
        )
        location = problem.location.replace("-", comp) if problem.location else ""
        segments.append(
            field_sep.join(
                [
                    "ERR",
                    "",
                    location,
                    comp.join([error_code, error_text, "HL70357"]),
                    "E",
                    "",
                    "",
                    "",
                    _clean(problem.message, field_sep),
                ]
            )
        )
    return ("\r".join(segments) + "\r").encode("utf-8")


def _ack_text(problems: list[Rejection]) -> str:
    return _clean(problems[0].message, "|")[:80] if problems else ""


def _clean(text: str, field_sep: str) -> str:
    """Text safe inside one HL7 field: no delimiters, no line breaks."""
    for character in (field_sep, "^", "~", "\\", "&", "\r", "\n"):
        text = text.replace(character, " ")
    return text
