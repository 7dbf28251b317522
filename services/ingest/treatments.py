"""Recognise ITP treatments from codes and names, using the data table treatment_codes.yaml. Pure.

Codes are matched exactly (after mapping HL7 v2 coding-system names to their URIs); names match
case-insensitively as whole words or phrases, so "Solu-Medrol 125 mg IV" is a corticosteroid
and "prednisolone acetate" is too, while "pred" alone is nothing. Routes by which a medicine is
not ITP therapy (eye, ear, skin, airways, nose) are recognised the same way, from the table's
`local_routes`.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas import TherapyLine, TreatmentCategory
from services.config import load_yaml_model

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ATC = "http://www.whocc.no/atc"

# HL7 v2 table 0396 names (and common variants) for the same code systems.
SYSTEM_ALIASES = {
    "RXNORM": RXNORM,
    "RXN": RXNORM,
    "SCT": SNOMED,
    "SNM": SNOMED,
    "SNOMEDCT": SNOMED,
    "SNOMED": SNOMED,
    "2.16.840.1.113883.6.96": SNOMED,
    "2.16.840.1.113883.6.88": RXNORM,
    "ATC": ATC,
    "WC": ATC,
    "2.16.840.1.113883.6.73": ATC,
}


class _Code(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str
    code: str
    display: str


class TreatmentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["medication", "procedure", "transfusion"]
    line: TherapyLine
    names: tuple[str, ...]
    codes: tuple[_Code, ...] = ()


class LocalRoutes(BaseModel):
    """Routes that keep a medicine where it is put (eye drops, inhalers...): not ITP therapy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    names: tuple[str, ...]
    codes: tuple[_Code, ...] = ()


@dataclass(frozen=True)
class Recognised:
    category: TreatmentCategory
    kind: Literal["medication", "procedure", "transfusion"]
    line: TherapyLine  # stamped on the event: the table is the one source of truth


class TreatmentTable(BaseModel):
    """The versioned table; `unverified` codes are kept in the file for review, never matched."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    categories: dict[TreatmentCategory, TreatmentEntry]
    local_routes: LocalRoutes = LocalRoutes(names=())
    unverified: tuple[dict[str, str], ...] = ()

    @cached_property
    def _by_code(self) -> dict[tuple[str, str], TreatmentCategory]:
        return {
            (code.system, code.code): category
            for category, entry in self.categories.items()
            for code in entry.codes
        }

    @cached_property
    def _by_name(self) -> list[tuple[re.Pattern[str], TreatmentCategory]]:
        patterns = [
            (_whole_words(name), category)
            for category, entry in self.categories.items()
            for name in entry.names
        ]
        # Longest names first, so "rituxan hycela" wins over a shorter overlapping name.
        return sorted(patterns, key=lambda item: -len(item[0].pattern))

    @cached_property
    def _local_route_codes(self) -> dict[tuple[str, str], str]:
        return {(code.system, code.code): code.display for code in self.local_routes.codes}

    @cached_property
    def _local_route_names(self) -> list[re.Pattern[str]]:
        return [_whole_words(name) for name in self.local_routes.names]

    def _recognised(self, category: TreatmentCategory) -> Recognised:
        entry = self.categories[category]
        return Recognised(category, entry.kind, entry.line)

    def recognise(self, codings: list[tuple[str, str]], texts: list[str]) -> Recognised | None:
        """The category named by any coding (exactly) or, failing that, by any text."""
        for system, code in codings:
            category = self._by_code.get((canonical_system(system), code.strip()))
            if category is not None:
                return self._recognised(category)
        for text in texts:
            for pattern, category in self._by_name:
                if pattern.search(text):
                    return self._recognised(category)
        return None

    def local_route(self, codings: list[tuple[str, str]], texts: list[str]) -> str | None:
        """What names the route as one that is not ITP therapy (the table's display of a coding,
        or the text as sent), or None when the route is systemic or not recognised."""
        for system, code in codings:
            display = self._local_route_codes.get((canonical_system(system), code.strip()))
            if display is not None:
                return f"{display} ({code.strip()})"
        for text in texts:
            if any(pattern.search(text) for pattern in self._local_route_names):
                return text
        return None


def _whole_words(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.IGNORECASE)


def canonical_system(system: str) -> str:
    cleaned = system.strip()
    return SYSTEM_ALIASES.get(cleaned.upper(), cleaned)


def load_treatment_table(path: Path | None = None) -> TreatmentTable:
    """Read the table; without a path, the one shipped beside this module."""
    return load_yaml_model(
        TreatmentTable, path or resources.files(__package__) / "treatment_codes.yaml"
    )
