"""A time zone named in configuration: checked when the file or setting is read, not when the
first alert arrives at night."""

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def _known(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error
    return name


ZoneName = Annotated[str, AfterValidator(_known)]
