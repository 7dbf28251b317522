"""Times as the people paged read them: in the deployment's zone, with its offset, never UTC
isoformat ("28 Nov 03:10 +01:00"). Pure; the zone is the caller's (PLATELETWATCH_LOCAL_TIMEZONE).
"""

from datetime import datetime, timedelta, tzinfo


def shown_at(moment: datetime, zone: tzinfo, *, year: bool = False, seconds: bool = False) -> str:
    """`moment` on the local wall clock with its offset: "28 Nov 03:10 +01:00"; with `year`,
    "28 Nov 2026 03:10 +01:00"; with `seconds`, "03:10:05"."""
    local = moment.astimezone(zone)
    clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
    return f"{shown_on(moment, zone, year=year)} {clock} {offset(local)}"


def shown_on(moment: datetime, zone: tzinfo, *, year: bool = False) -> str:
    """The local date of `moment`: "28 Nov", or "28 Nov 2026" with `year`."""
    local = moment.astimezone(zone)
    return f"{local.day} {local:%b}" + (f" {local.year}" if year else "")


def offset(local: datetime) -> str:
    """The UTC offset of a local time as "+01:00" (Python 3.11's %z has no colon)."""
    minutes = int((local.utcoffset() or timedelta(0)).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"
