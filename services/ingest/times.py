"""Timestamps as feeds send them, made timezone-aware.

A time without an offset is read in the hospital's local zone (configured), never assumed UTC
silently; a date without a time means the start of that day there.
"""

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

_HL7_TS = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,6}))?(?P<offset>[+-]\d{4})?$"
)


def parse_hl7_timestamp(text: str, local_zone: tzinfo) -> datetime | None:
    """An HL7 v2 TS/DTM such as 20260115083000+0100; None when empty or malformed."""
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
        return moment.replace(tzinfo=local_zone)
    sign = 1 if parts["offset"][0] == "+" else -1
    hours, minutes = int(parts["offset"][1:3]), int(parts["offset"][3:5])
    return moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))


def parse_hl7_date(text: str) -> date | None:
    """An HL7 v2 DT/DTM birth date (the date part only); None when empty or malformed."""
    match = _HL7_TS.match(text.strip())
    if match is None or match["month"] is None or match["day"] is None:
        return None
    try:
        return date(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        return None


def parse_fhir_datetime(text: str, local_zone: tzinfo) -> datetime | None:
    """A FHIR date, dateTime or instant; partial dates (YYYY, YYYY-MM) mean their first day."""
    value = text.strip()
    try:
        if len(value) in (4, 7):
            value = value + ("-01-01" if len(value) == 4 else "-01")
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=local_zone)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=local_zone)
