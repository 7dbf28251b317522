"""Export the event models as JSON Schema files, and tell when the checked-in files have drifted."""

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas.events import (
    AckEvent,
    DeadLetter,
    DeliveryEvent,
    LabResult,
    PlateletAlert,
    clinical_context_adapter,
)

JSON_DIR = Path(__file__).parent / "json"

_CONTRACTS: dict[str, type[BaseModel] | TypeAdapter[Any]] = {
    "lab_result": LabResult,
    "clinical_context_event": clinical_context_adapter,
    "platelet_alert": PlateletAlert,
    "delivery_event": DeliveryEvent,
    "ack_event": AckEvent,
    "dead_letter": DeadLetter,
}


def render_schemas() -> dict[str, str]:
    """Map each file name to its JSON Schema text, exactly as it is checked in."""
    rendered = {}
    for name, contract in _CONTRACTS.items():
        schema = (
            contract.json_schema()
            if isinstance(contract, TypeAdapter)
            else contract.model_json_schema()
        )
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name,
            **schema,
        }
        rendered[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def drifted_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of schema files that are missing, stale or no longer exported."""
    expected = render_schemas()
    present = {p.name for p in directory.glob("*.schema.json")}
    stale = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + [name for name in present if name not in expected])


def write_schemas(directory: Path = JSON_DIR) -> None:
    """Rewrite the exported files so they match the models again."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_schemas()
    for stale in directory.glob("*.schema.json"):
        if stale.name not in expected:
            stale.unlink()
    for name, text in expected.items():
        (directory / name).write_text(text, encoding="utf-8")
