"""bench-results.json at the repository root: each benchmark merges its figures into it, with the
target for a figure (where issue 17 set one) beside it as `<key>_target`."""

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "bench-results.json"


def record(figures: dict[str, Any], targets: dict[str, str] | None = None) -> None:
    """Merge `figures` and their `targets` (text such as ">= 300") into the results file and print
    each figure with its target beside it."""
    targets = targets or {}
    unknown = set(targets) - set(figures)
    if unknown:
        raise ValueError(f"targets for figures not measured: {sorted(unknown)}")
    current = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    current.update(figures)
    current.update({f"{key}_target": goal for key, goal in targets.items()})
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    width = max(map(len, figures), default=0)
    for key, value in figures.items():
        goal = f"   (target {targets[key]})" if key in targets else ""
        print(f"{key:<{width}}  {json.dumps(value)}{goal}")
