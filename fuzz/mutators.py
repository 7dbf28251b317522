"""Structure-aware mutations, so the fuzzer gets past json.loads and the MSH check. Pure.

Byte-level mutation alone rarely keeps a FHIR Bundle valid JSON or an ORU^R01 parseable, so
most of its inputs die at the first check. These mutators edit the structure instead: a JSON
tree (replace a node by another type, splice a subtree elsewhere, nest it deeply, add a key seen
in the seeds) or HL7 segments and fields (swap in odd timestamps, delimiters, long values). With
some probability, or when the input no longer parses, they hand the bytes to `byte_mutate`
(libFuzzer's own mutator in the fuzzer) so plain byte-level surprises are still tried.
"""

import json
import random
from collections.abc import Callable
from typing import Any

ByteMutator = Callable[[bytes, int], bytes]
Json = Any

# Values that broke, or could break, a reader: wrong types, absurd times, odd text.
ODD_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "x",
    "\ud800",
    "\udfff",
    "\x00",
    "0",
    "-1",
    "1e400",
    "NaN",
    "Infinity",
    "12",
    "<5",
    "<=",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
    "2026-11-25T07:40:00+24:00",
    "2026-11-25T07:40:00+14:01",
    "2026-11-25T07:40:00-23:59",
    "1899-12-31",
    "2101-01-01",
    "2026-02-30",
    "2026",
    "2026-11",
    "2026-11-25",
    "Patient/",
    "Patient/p1",
    "#",
    "#x",
    "urn:uuid:",
    "http://loinc.org",
    "777-3",
    "26515-7",
    "10*3/uL",
    "/uL",
    "final",
    "entered-in-error",
    "Bundle",
    "Observation",
    "Patient",
    "MedicationAdministration",
    "Procedure",
    "prednisone",
    "x" * 300,
    "9" * 400,
    "\u00b5" * 70,
)
ODD_NUMBERS: tuple[Json, ...] = (
    0,
    -1,
    1,
    12,
    10**30,
    2**63,
    -(2**63),
    1e308,
    -0.0,
    0.5,
    True,
    False,
)

ODD_HL7_FIELDS: tuple[str, ...] = (
    "",
    "20261125074000+2400",
    "20261125074000-2359",
    "20261125074000+1401",
    "99991231235959",
    "00010101",
    "18991231",
    "21010101",
    "2026",
    "20260230",
    "20261125074000.1234567",
    "\\X00\\",
    "\\XFF\\",
    "\\X\\",
    "\\",
    "\\F\\\\S\\\\R\\\\E\\\\T\\",
    "^^^^",
    "~~~",
    "&&&",
    "777-3^Platelets^LN",
    "26515-7^PLT^LN^L1^Plt^99LOC",
    "12",
    "<^5",
    "^12^-^20",
    "1" * 400,
    "10\\S\\9/L",
    "/uL",
    "F",
    "C",
    "D",
    "W",
    "I",
    "MRN-42^^^GENHOSP^MR",
    "^^^^MR",
    "A" * 300,
    "ORU^R01",
    "ACK^R01",
    "2.5.1",
    "2.9",
)


def mutate_json(data: bytes, max_size: int, seed: int, byte_mutate: ByteMutator) -> bytes:
    """A JSON document with one structural change, or a byte-level mutation of it."""
    rng = random.Random(seed)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return byte_mutate(data, max_size)
    if rng.random() < 0.15:
        return byte_mutate(data, max_size)
    try:
        for _ in range(1 + int(rng.random() < 0.3)):
            document = _mutate_tree(document, rng)
        out = json.dumps(document).encode()
    except RecursionError:  # a tree nested too deeply to copy or write: mutate its bytes
        return byte_mutate(data, max_size)
    return out if len(out) <= max_size else byte_mutate(data, max_size)


def _nodes(document: Json) -> list[tuple[Json, Json]]:
    """Every (container, key) pair in the tree, without recursion (inputs may nest deeply)."""
    found: list[tuple[Json, Json]] = []
    stack = [document] if isinstance(document, dict | list) else []
    while stack and len(found) < 5000:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            found.append((node, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return found


def _random_value(rng: random.Random, document: Json, nodes: list[tuple[Json, Json]]) -> Json:
    choice = rng.randrange(6)
    if choice == 0:
        return rng.choice(ODD_STRINGS)
    if choice == 1:
        return rng.choice(ODD_NUMBERS)
    if choice == 2:
        return rng.choice([None, [], {}, [1], {"x": "y"}])
    if choice == 3 and nodes:
        container, key = rng.choice(nodes)
        return json.loads(json.dumps(container[key]))  # a copy of another subtree
    if choice == 4:
        return _keys(document, rng)
    return rng.choice(ODD_STRINGS) * rng.randrange(1, 4)


def _keys(document: Json, rng: random.Random) -> str:
    keys = [key for container, key in _nodes(document) if isinstance(container, dict)]
    return rng.choice(keys) if keys else "resourceType"


def _mutate_tree(document: Json, rng: random.Random) -> Json:
    nodes = _nodes(document)
    if not nodes:
        return _random_value(rng, document, nodes)
    container, key = rng.choice(nodes)
    action = rng.randrange(8)
    if action == 0:
        container[key] = _random_value(rng, document, nodes)
    elif action == 1:
        container[key] = [container[key]]
    elif action == 2:
        container[key] = {_keys(document, rng): container[key]}
    elif action == 3:
        del container[key]
    elif action == 4 and isinstance(container, dict):
        container[_keys(document, rng)] = _random_value(rng, document, nodes)
    elif action == 4:
        container.insert(rng.randrange(len(container) + 1), _random_value(rng, document, nodes))
    elif action == 5:
        deep: Json = container[key]
        for _ in range(rng.choice([2, 30, 200, 1100])):
            deep = [deep]
        container[key] = deep
    elif action == 6 and isinstance(container[key], str):
        container[key] = _mutate_text(container[key], rng)
    else:
        source_container, source_key = rng.choice(nodes)
        container[key] = json.loads(json.dumps(source_container[source_key]))
    return document


def _mutate_text(text: str, rng: random.Random) -> str:
    if not text:
        return rng.choice(ODD_STRINGS)
    at = rng.randrange(len(text) + 1)
    edit = rng.randrange(4)
    if edit == 0:
        return text[:at] + rng.choice(ODD_STRINGS) + text[at:]
    if edit == 1:
        return text[:at] + text[at + 1 :]
    if edit == 2:
        return text[:at] + chr(rng.randrange(0x10FFFF + 1)) + text[at:]
    return text * rng.randrange(2, 40)


def mutate_hl7(data: bytes, max_size: int, seed: int, byte_mutate: ByteMutator) -> bytes:
    """An HL7 message with one segment- or field-level change, or a byte-level mutation of it."""
    rng = random.Random(seed)
    if rng.random() < 0.25 or b"|" not in data:
        return byte_mutate(data, max_size)
    text = data.decode("latin-1")
    separator = "\r" if "\r" in text else "\n"
    segments = [segment for segment in text.split(separator) if segment]
    if not segments:
        return byte_mutate(data, max_size)
    at = rng.randrange(len(segments))
    action = rng.randrange(5)
    if action == 0:
        segments.insert(rng.randrange(len(segments) + 1), segments[at])
    elif action == 1 and len(segments) > 1:
        del segments[at]
    elif action == 2:
        other = rng.randrange(len(segments))
        segments[at], segments[other] = segments[other], segments[at]
    else:
        fields = segments[at].split("|")
        position = rng.randrange(1, max(2, len(fields) + 3))
        fields.extend([""] * (position + 1 - len(fields)))
        if action == 3:
            fields[position] = rng.choice(ODD_HL7_FIELDS)
        else:
            donor = rng.choice(segments).split("|")
            fields[position] = rng.choice(donor)
        segments[at] = "|".join(fields)
    out = separator.join(segments).encode("latin-1", errors="replace")
    return out if len(out) <= max_size else byte_mutate(data, max_size)
