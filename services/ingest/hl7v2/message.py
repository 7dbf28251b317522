"""HL7 v2 message parsing: segments, fields, repetitions, components, escapes. Pure.

Accepts what senders really send: CR, LF or CRLF between segments, a UTF-8 byte-order mark,
five encoding characters in MSH-2 (with the truncation character), and text in UTF-8 or, when
MSH-18 says so, ISO 8859-1.
"""

import re
from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
_LATIN_1_CHARSETS = {"8859/1", "ISO-8859-1", "ISO_IR 100"}
_HEX_ESCAPE = re.compile(r"^X([0-9A-Fa-f]{2})+$")


class Hl7ParseError(ValueError):
    """The bytes are not an HL7 v2 message; the message says where parsing stopped."""


@dataclass(frozen=True)
class Delimiters:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


@dataclass(frozen=True)
class Segment:
    name: str
    fields: tuple[str, ...]  # raw, still escaped; index n is SEG-n (MSH is shifted to match)
    delimiters: Delimiters

    def raw(self, field: int) -> str:
        return self.fields[field] if 0 < field < len(self.fields) else ""

    def repetitions(self, field: int) -> list[str]:
        raw = self.raw(field)
        return raw.split(self.delimiters.repetition) if raw else []

    def get(
        self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 0
    ) -> str:
        """One value, unescaped; empty when absent. Numbering is HL7's: from 1."""
        reps = self.repetitions(field)
        if repetition >= len(reps):
            return ""
        components = reps[repetition].split(self.delimiters.component)
        if component > len(components):
            return ""
        subcomponents = components[component - 1].split(self.delimiters.subcomponent)
        if subcomponent > len(subcomponents):
            return ""
        return unescape(subcomponents[subcomponent - 1], self.delimiters).strip()

    def components(self, field: int, repetition: int = 0) -> list[str]:
        reps = self.repetitions(field)
        if repetition >= len(reps):
            return []
        return [
            unescape(c, self.delimiters).strip()
            for c in reps[repetition].split(self.delimiters.component)
        ]


@dataclass(frozen=True)
class Hl7Message:
    segments: tuple[Segment, ...]
    delimiters: Delimiters

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return [segment for segment in self.segments if segment.name == name]

    def first(self, name: str) -> Segment | None:
        return next((segment for segment in self.segments if segment.name == name), None)


def unescape(text: str, delimiters: Delimiters) -> str:
    r"""Resolve \F\ \S\ \T\ \R\ \E\, \.br\ (line break) and \Xhh\; drop other formatting."""
    escape = delimiters.escape
    if escape not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == escape:
            end = text.find(escape, i + 1)
            if end == -1:
                out.append(text[i:])
                break
            out.append(_escape_value(text[i + 1 : end], delimiters))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _escape_value(code: str, d: Delimiters) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape}
    if code in simple:
        return simple[code]
    if code == ".br":
        return "\n"
    if _HEX_ESCAPE.match(code):
        return bytes.fromhex(code[1:]).decode("latin-1")
    return ""  # highlighting (\H\, \N\) and other formatting commands carry no data


def decode(raw: bytes) -> str:
    """Bytes to text: UTF-8 unless MSH-18 names ISO 8859-1; a BOM is dropped."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    head = raw.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    fields = head.split(head[3]) if len(head) > 3 else []
    charset = fields[17].split("^")[0].strip().upper() if len(fields) > 17 else ""
    if charset in _LATIN_1_CHARSETS:
        return raw.decode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse(raw: bytes) -> Hl7Message:
    """Parse one message; raise Hl7ParseError when it does not start with a usable MSH."""
    text = decode(raw).strip("\r\n\x0b\x1c \t")
    lines = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise Hl7ParseError("message does not start with an MSH segment")
    msh = lines[0]
    field_separator = msh[3]
    encoding = msh[4:].split(field_separator, 1)[0]
    if len(encoding) < 4 or field_separator.isalnum():
        raise Hl7ParseError(f"MSH-2 encoding characters {encoding[:10]!r} are incomplete")
    delimiters = Delimiters(field_separator, encoding[0], encoding[1], encoding[2], encoding[3])
    segments: list[Segment] = []
    for line in lines:
        parts = line.split(field_separator)
        name = parts[0].strip()
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise Hl7ParseError(f"segment {len(segments) + 1} has no valid name: {name[:3]!r}")
        if name == "MSH":
            parts = ["MSH", field_separator, *parts[1:]]
        segments.append(Segment(name, tuple(parts), delimiters))
    return Hl7Message(tuple(segments), delimiters)


def split_messages(raw: bytes) -> list[bytes]:
    """Split a file holding several messages (each starting with MSH); batch headers are dropped."""
    text = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    lines = re.split(rb"\r\n|\r|\n", text.replace(b"\x0b", b"").replace(b"\x1c", b""))
    messages: list[list[bytes]] = []
    for line in lines:
        if line.startswith(b"MSH"):
            messages.append([line])
        elif messages and line.strip() and line[:3] not in (b"FHS", b"BHS", b"BTS", b"FTS"):
            messages[-1].append(line)
    return [b"\r".join(message) + b"\r" for message in messages]
