"""The history's compact store of counts (engine/values.py) gives back exactly what it was given:
every field of every count, in the order added, whatever the ids and times look like."""

import json
import random
from datetime import UTC, datetime, timedelta, timezone

from schemas import ResultStatus
from services.classifier.engine.values import Value, Values


def value(result_id: str, event_id: str, at: datetime, **changes: object) -> Value:
    fields: dict[str, object] = {
        "result_id": result_id,
        "event_id": event_id,
        "number": 12.5,
        "comparator": None,
        "original_value": "12.5",
        "original_unit": "10*9/L",
        "status": ResultStatus.FINAL,
        "at": at,
        "verified_at": at + timedelta(minutes=35),
        "seq": 1,
        "population": "adult",
        "code": ("http://loinc.org", "777-3"),
        "flags": (),
    }
    fields.update(changes)
    return Value(**fields)  # type: ignore[arg-type]


AT = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)


def test_every_field_comes_back_as_given() -> None:
    given = [
        value("R1", "c86fd67c-0e90-5290-ba8a-c1f1dfc81c8f", AT),
        value(
            "R2",
            "C86FD67C-0E90-5290-BA8A-C1F1DFC81C8F",  # not the canonical text: kept as written
            AT + timedelta(days=1),
            number=5.0,
            comparator="<",
            original_value="<5",
            status=ResultStatus.CORRECTED,
            verified_at=None,
            seq=7,
            population="paediatric",
            code=None,
            flags=("LL", "<"),
        ),
        value("R3", "E-17", AT - timedelta(days=3), number=150.0, original_value="150000"),
        value("R\x00\x01\x02 odd", "12345678-1234-1234-1234-123456789012", AT, seq=2),
        value("R5", "", AT, original_value="1\x00\x02\x01", original_unit="/uL"),
        value("R6", "hl7:MSG-000017:OBX-1:" + "9" * 20, AT),  # longer than a row holds
        value("R7", "événement-7", AT),  # not ASCII
        value("R8", "E-8\x00", AT),  # a NUL would read as the row's padding
    ]
    held = Values(given)
    assert list(held) == [v.result_id for v in given]
    assert held.values() == given
    assert [held[v.result_id] for v in given] == given
    assert all(v.result_id in held for v in given)
    assert "R" not in held
    assert "R\x00" not in held
    assert "odd" not in held
    assert held.event_id_of("R2") == "C86FD67C-0E90-5290-BA8A-C1F1DFC81C8F"
    assert held.in_order() == sorted(given, key=lambda v: (v.at, v.seq))
    assert Values(Value.from_json(row) for row in held.to_json()).values() == given


def test_times_come_back_to_the_microsecond_from_1900_to_2100() -> None:
    rng = random.Random(17)
    start, span = datetime(1900, 1, 1, tzinfo=UTC), (datetime(2100, 12, 31) - datetime(1900, 1, 1))
    times = [start + span * rng.random() for _ in range(2000)]
    given = [
        value(f"R{n}", "", at, verified_at=at + timedelta(microseconds=rng.randrange(10**11)))
        for n, at in enumerate(times)
    ]
    held = Values(given)
    assert held.values() == given
    assert [v.at for v in held.in_order()] == sorted(times)


def test_a_time_in_another_zone_is_held_as_its_instant() -> None:
    paris = timezone(timedelta(hours=1))
    held = Values([value("R1", "", AT.astimezone(paris))])
    assert held["R1"].at == AT
    assert held["R1"].at.utcoffset() == timedelta(0)


def test_replacing_removing_and_windows() -> None:
    held = Values(value(f"R{n}", "", AT + timedelta(days=n), seq=n) for n in range(6))
    held["R2"] = value("R2", "E-corrected", AT + timedelta(days=2), number=99.0, seq=2)
    assert list(held) == [f"R{n}" for n in range(6)]  # replaced in its place, as a dict does
    assert held["R2"].number == 99.0
    assert held.event_id_of("R2") == "E-corrected"
    del held["R0"]
    held.remove({"R4", "missing"})
    assert list(held) == ["R1", "R2", "R3", "R5"]
    window = held.in_order(AT + timedelta(days=2), AT + timedelta(days=3))
    assert [v.result_id for v in window] == ["R2", "R3"]
    assert held.collected_before(AT + timedelta(days=3)) == {"R1", "R2"}
    assert held.by_age() == ["R1", "R2", "R3", "R5"]
    assert held.oldest() == AT + timedelta(days=1)
    assert held.newest() == AT + timedelta(days=5)
    assert held.get("R4") is None
    assert held.event_id_of("R4") is None
    assert held == {v.result_id: v for v in held.values()}


def test_the_json_kept_follows_counts_added_replaced_and_removed() -> None:
    """`encoded` keeps the JSON of the counts encoded before; it must stay the JSON of
    `to_json` as counts are added, replaced in place and removed."""
    held = Values(value(f"R{n}", f"E{n}", AT + timedelta(days=n), seq=n) for n in range(3))

    def is_its_json() -> bool:
        return f"[{held.encoded()}]" == json.dumps(held.to_json(), separators=(",", ":"))

    assert is_its_json()
    held.append(value("R3", "E3", AT + timedelta(days=3), seq=3, verified_at=None))
    assert is_its_json()
    held["R1"] = value("R1", "E-corrected", AT + timedelta(days=1), number=99.0, flags=("LL",))
    assert is_its_json()
    held.remove({"R0"})
    assert is_its_json()
    held.append(value('R\u00e9"\\', "E4", AT + timedelta(days=4), comparator="<"))
    assert is_its_json()
    held.remove({"R1", "R2", "R3", 'R\u00e9"\\'})
    assert held.encoded() == ""
    assert is_its_json()
