"""bench-results.json at the repository root: each benchmark merges its figures into it."""

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "bench-results.json"


def record(figures: dict[str, Any]) -> None:
    """Merge `figures` into the results file and print them."""
    current = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    current.update(figures)
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=2))
