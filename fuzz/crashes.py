"""Crashes grouped by where they happen: the innermost frame (file:line) and the exception type.

Thousands of crashing inputs usually come from a handful of defects; grouping by site gives one
entry, one saved example and a count per defect. Pure apart from `save_example`.
"""

import hashlib
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_PREVIEW_BYTES = 300
# Our saved examples; libFuzzer names its own artifacts crash-, timeout-, oom-.
EXAMPLE_PREFIX = "input-"


@dataclass
class CrashSite:
    where: str
    exception: str
    message: str
    inputs: int
    example: str
    example_preview: str


def site_of(error: BaseException) -> tuple[str, str]:
    """(file:line of the innermost frame, exception type): the identity of a crash site."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?", type(error).__name__
    innermost = frames[-1]
    return f"{_short_path(innermost.filename)}:{innermost.lineno}", type(error).__name__


def _short_path(filename: str) -> str:
    """Repository files relative to the repository; libraries from their package down."""
    path = Path(filename)
    if path.is_relative_to(REPO) and ".venv" not in path.parts:
        return str(path.relative_to(REPO))
    for marker in ("site-packages", f"python{sys.version_info.major}.{sys.version_info.minor}"):
        if marker in path.parts:
            return str(Path(*path.parts[path.parts.index(marker) + 1 :]))
    return filename


class CrashLog:
    """The distinct crash sites seen so far, each with the first input that reached it."""

    def __init__(self, examples: Path) -> None:
        self._examples = examples
        self._sites: dict[tuple[str, str], CrashSite] = {}

    def record(self, error: BaseException, data: bytes) -> bool:
        """Count the crash; return True (and save the input) when its site is new."""
        key = site_of(error)
        site = self._sites.get(key)
        if site is not None:
            site.inputs += 1
            return False
        example = save_example(self._examples, data)
        self._sites[key] = CrashSite(
            where=key[0],
            exception=key[1],
            message=str(error)[:300],
            inputs=1,
            example=str(example),
            example_preview=repr(data[:_PREVIEW_BYTES]),
        )
        return True

    def sites(self) -> list[dict[str, Any]]:
        return [asdict(site) for site in self._sites.values()]


def save_example(folder: Path, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{EXAMPLE_PREFIX}{hashlib.sha256(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path
