"""Timestamps as feeds send them, made timezone-aware.

A time without an offset is read in the hospital's local zone (configured), never assumed UTC
silently; a date without a time means the start of that day there. A malformed time reads as
None (the caller may try another field); a well-formed one that no clinical record can hold
(outside 1900-01-01..2100-12-31, or a UTC offset beyond ±14:00) raises ImplausibleTimeError,
so the caller refuses the input naming the field instead of passing on a time that breaks date
arithmetic downstream.
"""

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from schemas import implausible_time

_HL7_TS = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,6}))?(?P<offset>[+-]\d{4})?$"
)


class ImplausibleTimeError(ValueError):
    """A well-formed time outside what a clinical record can hold; the message says why."""


def _plausible(moment: datetime) -> datetime:
    problem = implausible_time(moment)
    if problem is not None:
        raise ImplausibleTimeError(problem)
    return moment


def parse_hl7_timestamp(text: str, local_zone: tzinfo) -> datetime | None:
    """An HL7 v2 TS/DTM such as 20260115083000+0100; None when empty or malformed; raises
    ImplausibleTimeError when out of range."""
    match = _HL7_TS.match(text.strip())
    if match is None:
        return None
    parts = match.groupdict()
    try:
        moment = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((parts["fraction"] or "0").ljust(6, "0")),
        )
    except ValueError:
        return None
    if parts["offset"] is None:
        return _plausible(moment.replace(tzinfo=local_zone))
    sign = 1 if parts["offset"][0] == "+" else -1
    hours, minutes = int(parts["offset"][1:3]), int(parts["offset"][3:5])
    if minutes > 59:
        return None
    offset = sign * timedelta(hours=hours, minutes=minutes)
    if abs(offset) >= timedelta(hours=24):  # beyond what a timezone object can even hold
        raise ImplausibleTimeError(f"{text.strip()} has a UTC offset beyond ±14:00")
    return _plausible(moment.replace(tzinfo=timezone(offset)))


def parse_hl7_date(text: str) -> date | None:
    """An HL7 v2 DT/DTM birth date (the date part only); None when empty or malformed. (One
    outside 1900..2100, a placeholder for "unknown", reads as unknown in the event model.)"""
    match = _HL7_TS.match(text.strip())
    if match is None or match["month"] is None or match["day"] is None:
        return None
    try:
        return date(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        return None


def parse_fhir_datetime(text: str, local_zone: tzinfo) -> datetime | None:
    """A FHIR date, dateTime or instant; partial dates (YYYY, YYYY-MM) mean their first day.
    None when malformed; raises ImplausibleTimeError when out of range."""
    value = text.strip()
    try:
        if len(value) in (4, 7):
            value = value + ("-01-01" if len(value) == 4 else "-01")
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time(), tzinfo=local_zone)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _plausible(moment if moment.tzinfo else moment.replace(tzinfo=local_zone))


def parse_fhir_birth_date(text: str, local_zone: tzinfo) -> date | None:
    """A FHIR birthDate; None when malformed or outside 1900..2100 (a placeholder for "unknown":
    it only leaves the population undecided, which is safer than refusing the count)."""
    try:
        moment = parse_fhir_datetime(text, local_zone)
    except ImplausibleTimeError:
        return None
    return moment.date() if moment else None
