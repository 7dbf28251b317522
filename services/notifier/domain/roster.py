"""Who is on call: the hematology roster, from a YAML file and iCal feeds. Pure apart from reading
the files it names.

For paediatric and adult hematology, each tier (primary, secondary, attending) is held by one
person at a time, optionally for some wards only: a ward's own shift wins over a hospital-wide one,
and of two overlapping shifts the later-starting one wins (a swap or a cover entered on top of the
rota). Nobody holding a tier is a gap: the page goes to the fallback (the lab supervisor) and the
gap is reported, so it is fixed rather than discovered at 3 a.m.

Shift times written without an offset are in the roster's timezone. In an iCal feed each event is
one shift; its SUMMARY is the person's id in the roster and its LOCATION, if any, lists wards
(comma-separated); recurring events (RRULE) are expanded.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import Population
from services.timezones import ZoneName

Tier = Literal["primary", "secondary", "attending"]
ChannelName = Literal["webhook", "email", "pagerduty", "slack", "sms"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Entry):
    """Someone who can be paged, and how. `id` is what rotas and calendars refer to."""

    id: str = ""
    name: str = Field(min_length=1)
    channel: ChannelName
    address: str = Field(min_length=1)


class Shift(_Entry):
    service: Population
    tier: Tier
    person: str
    start: datetime
    end: datetime
    wards: frozenset[str] = frozenset()  # none: every ward

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> "Shift":
        if self.end <= self.start:
            raise ValueError(f"shift for {self.person} ends before it starts")
        return self


class Calendar(_Entry):
    """An iCal feed for one service and tier, e.g. the adult primary rota exported by the rota
    system. `file` is relative to the roster file."""

    service: Population
    tier: Tier
    file: Path


class RosterFile(_Entry):
    timezone: ZoneName
    fallback: str
    people: dict[str, Person]
    shifts: tuple[Shift, ...] = ()
    calendars: tuple[Calendar, ...] = ()

    @model_validator(mode="after")
    def _people_exist(self) -> "RosterFile":
        named = {self.fallback, *(shift.person for shift in self.shifts)}
        unknown = sorted(named - self.people.keys())
        if unknown:
            raise ValueError(f"not in people: {', '.join(unknown)}")
        return self


@dataclass(frozen=True)
class OnCall:
    """Who to page for one tier at one moment; `gap` when that is the fallback standing in."""

    person: Person
    tier: Tier | Literal["fallback"]
    gap: bool


class RosterError(ValueError):
    """A roster that cannot be used; the message says where."""


class Roster:
    def __init__(
        self,
        zone: ZoneInfo,
        people: dict[str, Person],
        fallback: Person,
        shifts: Iterable[Shift],
        calendars: Iterable[tuple[Calendar, icalendar.Calendar]] = (),
    ) -> None:
        self._zone = zone
        self._people = people
        self.fallback = fallback
        self._shifts = tuple(_localised(shift, zone) for shift in shifts)
        self._calendars = tuple(calendars)

    @classmethod
    def everyone_to(cls, person: Person) -> "Roster":
        """One pager holding every tier of both services, always: a site without a rota yet."""
        always = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
        shifts = [
            Shift(service=service, tier=tier, person=person.id, start=always[0], end=always[1])
            for service in get_args(Population)
            for tier in get_args(Tier)
        ]
        return cls(ZoneInfo("UTC"), {person.id: person}, person, shifts)

    def on_call(
        self, service: Population, tier: Tier, at: datetime, ward: str | None = None
    ) -> OnCall:
        """Who holds `tier` for `service` at `at` (on `ward`, when the alert names one)."""
        holding = [
            shift
            for shift in (*self._shifts, *self._calendar_shifts(service, tier, at))
            if shift.service == service and shift.tier == tier and shift.start <= at < shift.end
        ]
        own_ward = [shift for shift in holding if ward is not None and ward in shift.wards]
        anywhere = [shift for shift in holding if not shift.wards]
        chosen = max(own_ward or anywhere, key=lambda shift: shift.start, default=None)
        if chosen is None:
            return OnCall(self.fallback, "fallback", gap=True)
        return OnCall(self._people[chosen.person], tier, gap=False)

    def _calendar_shifts(self, service: Population, tier: Tier, at: datetime) -> list[Shift]:
        shifts = []
        for source, calendar in self._calendars:
            if source.service != service or source.tier != tier:
                continue
            for event in recurring_ical_events.of(calendar).between(at, at + timedelta(seconds=1)):
                person = str(event.get("SUMMARY", "")).strip()
                if person not in self._people:
                    continue  # an event naming nobody on the roster holds no shift
                wards = str(event.get("LOCATION", ""))
                shift = Shift(
                    service=service,
                    tier=tier,
                    person=person,
                    start=_as_datetime(event.decoded("DTSTART")),
                    end=_as_datetime(event.decoded("DTEND")),
                    wards=frozenset(w.strip() for w in wards.split(",") if w.strip()),
                )
                shifts.append(_localised(shift, self._zone))
        return shifts


def _as_datetime(when: date) -> datetime:
    """An all-day event's date as its first moment (the zone is added by `_localised`)."""
    return when if isinstance(when, datetime) else datetime.combine(when, time())


def _localised(shift: Shift, zone: ZoneInfo) -> Shift:
    """Times without an offset are the roster's local time."""
    start, end = shift.start, shift.end
    return shift.model_copy(
        update={
            "start": start if start.tzinfo else start.replace(tzinfo=zone),
            "end": end if end.tzinfo else end.replace(tzinfo=zone),
        }
    )


def parse_roster(text: str, calendars: dict[Path, bytes]) -> Roster:
    """A roster from the YAML text and the iCal feeds it names (their bytes, by path)."""
    try:
        roster = RosterFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValueError) as error:
        raise RosterError(f"unusable roster: {error}") from error
    people = {pid: person.model_copy(update={"id": pid}) for pid, person in roster.people.items()}
    feeds = []
    for source in roster.calendars:
        try:
            feeds.append((source, icalendar.Calendar.from_ical(calendars[source.file])))
        except KeyError as error:
            raise RosterError(f"calendar {source.file} was not read") from error
        except ValueError as error:
            raise RosterError(f"calendar {source.file} is not iCal: {error}") from error
    zone = ZoneInfo(roster.timezone)
    return Roster(zone, people, people[roster.fallback], roster.shifts, feeds)


def load_roster(path: Path) -> Roster:
    """Read a roster file and the calendar files it names (relative to it)."""
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    named = data.get("calendars") or () if isinstance(data, dict) else ()
    files = [Path(entry["file"]) for entry in named if isinstance(entry, dict) and "file" in entry]
    calendars = {name: (path.parent / name).read_bytes() for name in files}
    return parse_roster(text, calendars)
