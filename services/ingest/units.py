"""Platelet count units, normalised to 10^9/L.

A unit not in the table is rejected, never guessed: a factor of 1000 between /uL and 10^3/uL is
the difference between a normal count and a critical one. So is a value that, converted, is no
count a living patient can have (above 10,000 x10^9/L): a unit or transcription error. Values
and units are refused, never cut, past 32 characters (no real one comes near).
"""

import re
from typing import cast

from schemas import (
    MAX_PLATELETS_10E9_PER_L,
    MAX_UNIT_LENGTH,
    MAX_VALUE_LENGTH,
    Comparator,
    PlateletCount,
)

# Spellings are compared after `_canonical_spelling`: case-folded, spaces removed, micro -> u.
_PER_NANOLITRE = {
    "10*9/l", "10^9/l", "10e9/l", "x10e9/l", "10\\s\\9/l", "giga/l", "giga.l-1", "/nl",
    "10*3/ul", "10^3/ul", "10e3/ul", "x10e3/ul", "x10*3/ul", "x10^3/ul", "10+3/ul", "k/ul",
    "thou/ul", "10^3/mm3", "10*3/mm3", "x10^3/mm3",
}  # fmt: skip
_PER_MICROLITRE = {"/ul", "/mm3", "cumm", "/cumm", "{cells}/ul", "cells/ul", "#/ul"}

# UCUM is case-sensitive where the case is the meaning: G/L is giga per litre (10^9/L, as French
# and Swiss labs write it) but g/L is grams per litre, so these are matched before case-folding.
_CASE_SENSITIVE_FACTORS = {"G/L": 1.0}

FACTOR_TO_10E9_PER_L: dict[str, float] = {
    **dict.fromkeys(_PER_NANOLITRE, 1.0),
    **dict.fromkeys(_PER_MICROLITRE, 0.001),
}

_VALUE = re.compile(r"^\s*(?P<comparator><=|>=|<|>)?\s*(?P<number>\d+(?:\.\d+)?)\s*$")


class UnknownUnitError(ValueError):
    """The unit is not a platelet count unit PlateletWatch knows how to convert."""


class UnreadableValueError(ValueError):
    """The value is not a number, optionally preceded by a comparator."""


def _canonical_spelling(unit: str) -> str:
    return unit.strip().replace(" ", "").replace("\u00b5", "u").replace("\u03bc", "u").casefold()


def to_10e9_per_l(value: float, unit: str) -> float:
    """Convert a count in `unit` to 10^9/L; raise UnknownUnitError for any unit not in the table."""
    factor = _CASE_SENSITIVE_FACTORS.get(unit.strip().replace(" ", ""))
    if factor is None:
        factor = FACTOR_TO_10E9_PER_L.get(_canonical_spelling(unit))
    if factor is None:
        raise UnknownUnitError(f"unknown platelet count unit {unit!r}")
    return round(value * factor, 6)


def parse_value(text: str) -> tuple[Comparator | None, float]:
    """Split a reported value such as "<5" into its comparator and number."""
    match = _VALUE.match(text)
    if match is None:
        raise UnreadableValueError(f"value {text!r} is not a number (optionally with <, <=, >, >=)")
    # The pattern admits only the four comparators, so the cast cannot widen the type.
    return cast(Comparator | None, match["comparator"]), float(match["number"])


def platelet_count(original_value: str, unit: str) -> PlateletCount:
    """Read a reported value and unit into a normalised count, keeping both as sent."""
    if len(original_value) > MAX_VALUE_LENGTH:
        raise UnreadableValueError(f"a value of {len(original_value)} characters is not a count")
    if len(unit) > MAX_UNIT_LENGTH:
        raise UnknownUnitError(f"a unit of {len(unit)} characters is not a platelet count unit")
    comparator, number = parse_value(original_value)
    value = to_10e9_per_l(number, unit)
    if value > MAX_PLATELETS_10E9_PER_L:
        raise UnreadableValueError(
            f"{original_value} {unit} is {value:g} x10^9/L, above any platelet count "
            f"({MAX_PLATELETS_10E9_PER_L:,} x10^9/L): check the value and its unit"
        )
    return PlateletCount(
        value_10e9_per_l=value,
        comparator=comparator,
        original_value=original_value,
        original_unit=unit,
    )
