"""Seed inputs per reader: the published samples, the examples, and fuzz/seeds/. Pure reading.

Mutation works best from small, valid inputs, so each FHIR Bundle also gives one seed per entry
(the entry alone, and in a one-entry Bundle beside the Bundle's Patients) besides the whole
Bundle when it fits the fuzzer's size limit.
"""

import json
from pathlib import Path
from typing import Any

from fuzz.crashes import REPO

CONFORMANCE = REPO.parent / "shared" / "conformance"
SEED_FOLDER = Path(__file__).parent / "seeds"
MAX_INPUT_BYTES = 32768  # libFuzzer's -max_len: larger inputs run too slowly to mutate well


def seeds_for(reader: str) -> tuple[list[bytes], list[str]]:
    """The seed inputs for one reader, and notes about the sources that were absent."""
    inputs = [path.read_bytes() for path in sorted((SEED_FOLDER / reader).glob("*"))]
    notes: list[str] = []
    if reader in ("hl7", "fhir") and not CONFORMANCE.is_dir():
        notes.append(
            f"{reader}: conformance samples not found at {CONFORMANCE}; not seeded from them"
        )
    if reader == "hl7":
        inputs += _files(REPO / "examples", "*.hl7") + _files(CONFORMANCE / "hl7v2", "*.hl7")
    elif reader == "fhir":
        for raw in _files(CONFORMANCE / "fhir", "*.json"):
            inputs += _fhir_pieces(raw)
    elif reader == "json":
        inputs += _files(REPO / "examples", "lab-result-*.json")
    return [data for data in inputs if len(data) <= MAX_INPUT_BYTES], notes


def _files(folder: Path, pattern: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.glob(pattern))] if folder.is_dir() else []


def _fhir_pieces(raw: bytes) -> list[bytes]:
    document = json.loads(raw)
    pieces = [raw]
    if document.get("resourceType") != "Bundle":
        return pieces
    entries: list[dict[str, Any]] = document.get("entry", [])
    patients = [e for e in entries if e.get("resource", {}).get("resourceType") == "Patient"]
    for entry in entries:
        pieces.append(json.dumps(entry.get("resource", {})).encode())
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [entry, *patients]}
        pieces.append(json.dumps(bundle).encode())
    return pieces
