"""The on-call roster: YAML shifts and iCal rotas, wards, covers, gaps, time zones."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.notifier.domain.roster import Roster, RosterError, load_roster, parse_roster

PEOPLE = """
timezone: Europe/London
fallback: supervisor
people:
  supervisor: {name: Haematology lab supervisor, channel: webhook, address: "https://lab.example/page"}
  okafor: {name: Dr A Okafor, channel: email, address: a.okafor@hospital.example}
  chen: {name: Dr B Chen, channel: pagerduty, address: routing-key-chen}
  silva: {name: Dr C Silva, channel: sms, address: "+441234567890"}
"""


def roster(shifts: str = "", calendars: dict[Path, bytes] | None = None, more: str = "") -> Roster:
    return parse_roster(PEOPLE + more + ("shifts:\n" + shifts if shifts else ""), calendars or {})


def at(utc: str) -> datetime:
    return datetime.fromisoformat(utc).replace(tzinfo=UTC)


DAY = """
  - {service: adult, tier: primary, person: okafor,
     start: 2026-11-25T08:00:00Z, end: 2026-11-25T20:00:00Z}
  - {service: adult, tier: primary, person: chen,
     start: 2026-11-25T20:00:00Z, end: 2026-11-26T08:00:00Z}
  - {service: paediatric, tier: primary, person: silva,
     start: 2026-11-25T08:00:00Z, end: 2026-11-26T08:00:00Z}
"""


def test_the_shift_holder_is_on_call_and_the_end_of_a_shift_belongs_to_the_next() -> None:
    rota = roster(DAY)
    assert rota.on_call("adult", "primary", at("2026-11-25T08:00:00")).person.id == "okafor"
    assert rota.on_call("adult", "primary", at("2026-11-25T19:59:59")).person.id == "okafor"
    assert rota.on_call("adult", "primary", at("2026-11-25T20:00:00")).person.id == "chen"
    assert rota.on_call("paediatric", "primary", at("2026-11-25T21:00:00")).person.id == "silva"


def test_a_gap_goes_to_the_fallback_and_says_so() -> None:
    rota = roster(DAY)
    nobody = rota.on_call("adult", "secondary", at("2026-11-25T12:00:00"))
    assert (nobody.person.id, nobody.tier, nobody.gap) == ("supervisor", "fallback", True)
    before = rota.on_call("adult", "primary", at("2026-11-25T07:59:00"))
    assert before.gap
    held = rota.on_call("adult", "primary", at("2026-11-25T12:00:00"))
    assert (held.tier, held.gap) == ("primary", False)


def test_times_without_an_offset_are_the_rosters_local_time() -> None:
    # 1 July: London is on BST (UTC+1), so a 08:00 start is 07:00 UTC.
    rota = roster(
        "  - {service: adult, tier: primary, person: okafor,"
        " start: 2026-07-01T08:00:00, end: 2026-07-01T20:00:00}\n"
    )
    assert rota.on_call("adult", "primary", at("2026-07-01T06:59:00")).gap
    assert not rota.on_call("adult", "primary", at("2026-07-01T07:00:00")).gap
    assert rota.on_call("adult", "primary", at("2026-07-01T19:00:00")).gap


def test_a_wards_own_shift_wins_over_the_hospital_wide_one() -> None:
    rota = roster(
        DAY + "  - {service: adult, tier: primary, person: silva, wards: [haem-7, bmt],"
        " start: 2026-11-25T00:00:00Z, end: 2026-11-27T00:00:00Z}\n"
    )
    noon = at("2026-11-25T12:00:00")
    assert rota.on_call("adult", "primary", noon, ward="bmt").person.id == "silva"
    assert rota.on_call("adult", "primary", noon, ward="ed").person.id == "okafor"
    assert rota.on_call("adult", "primary", noon).person.id == "okafor"


def test_a_cover_entered_over_the_rota_wins() -> None:
    rota = roster(
        DAY + "  - {service: adult, tier: primary, person: silva,"
        " start: 2026-11-25T12:00:00Z, end: 2026-11-25T14:00:00Z}\n"
    )
    assert rota.on_call("adult", "primary", at("2026-11-25T13:00:00")).person.id == "silva"
    assert rota.on_call("adult", "primary", at("2026-11-25T14:00:00")).person.id == "okafor"


WEEKDAYS_ICS = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Rota system//EN
BEGIN:VEVENT
UID:adult-primary-days@rota.example
SUMMARY:okafor
DTSTART;TZID=Europe/London:20261019T080000
DTEND;TZID=Europe/London:20261019T200000
RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR
END:VEVENT
BEGIN:VEVENT
UID:adult-primary-bmt@rota.example
SUMMARY:chen
LOCATION:bmt, haem-7
DTSTART;TZID=Europe/London:20261125T100000
DTEND;TZID=Europe/London:20261125T120000
END:VEVENT
BEGIN:VEVENT
UID:locum@rota.example
SUMMARY:a locum nobody entered
DTSTART;TZID=Europe/London:20261128T080000
DTEND;TZID=Europe/London:20261128T200000
END:VEVENT
END:VCALENDAR
"""
CALENDARS = "calendars:\n  - {service: adult, tier: primary, file: adult-primary.ics}\n"


def test_an_ical_rota_recurs_and_names_wards() -> None:
    rota = roster(calendars={Path("adult-primary.ics"): WEEKDAYS_ICS}, more=CALENDARS)
    wednesday = at("2026-11-25T11:00:00")
    assert rota.on_call("adult", "primary", wednesday).person.id == "okafor"
    assert rota.on_call("adult", "primary", wednesday, ward="bmt").person.id == "chen"
    # Across the end of BST (25 October): 08:00 in London is 07:00 UTC before, 08:00 after.
    assert not rota.on_call("adult", "primary", at("2026-10-20T07:30:00")).gap
    assert rota.on_call("adult", "primary", at("2026-11-24T07:30:00")).gap
    # Saturday: only an event naming someone not on the roster, which holds no shift.
    assert rota.on_call("adult", "primary", at("2026-11-28T12:00:00")).gap
    assert rota.on_call("adult", "secondary", wednesday).gap  # the feed is for primaries


def test_load_roster_reads_calendars_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "adult-primary.ics").write_bytes(WEEKDAYS_ICS)
    (tmp_path / "roster.yaml").write_text(PEOPLE + CALENDARS)
    rota = load_roster(tmp_path / "roster.yaml")
    assert rota.on_call("adult", "primary", at("2026-11-25T11:00:00")).person.name == (
        "Dr A Okafor"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (PEOPLE.replace("fallback: supervisor", "fallback: nobody"), "not in people: nobody"),
        (PEOPLE.replace("Europe/London", "Europe/Londres"), "unknown time zone"),
        (
            PEOPLE + "shifts:\n  - {service: adult, tier: primary, person: okafor,"
            " start: 2026-11-25T20:00:00Z, end: 2026-11-25T08:00:00Z}\n",
            "ends before it starts",
        ),
        (
            PEOPLE + "shifts:\n  - {service: adult, tier: registrar, person: okafor,"
            " start: 2026-11-25T08:00:00Z, end: 2026-11-25T20:00:00Z}\n",
            "tier",
        ),
        (PEOPLE.replace("channel: sms", "channel: fax"), "channel"),
        ("- just a list", "unusable roster"),
        (PEOPLE + CALENDARS, "adult-primary.ics was not read"),
    ],
)
def test_an_unusable_roster_is_refused_with_the_reason(text: str, words: str) -> None:
    with pytest.raises(RosterError, match=words):
        parse_roster(text, {})


def test_a_calendar_that_is_not_ical_is_refused() -> None:
    with pytest.raises(RosterError, match="not iCal"):
        roster(calendars={Path("adult-primary.ics"): b"<html>login</html>"}, more=CALENDARS)


def test_the_example_roster_loads_and_routes() -> None:
    rota = load_roster(Path(__file__).parents[1] / "examples" / "roster.yaml")
    monday_noon = at("2026-11-30T12:00:00")
    assert rota.on_call("adult", "primary", monday_noon).person.id == "okafor"
    assert rota.on_call("adult", "primary", monday_noon, ward="bmt").person.id == "silva"
    assert rota.on_call("adult", "attending", monday_noon).gap
