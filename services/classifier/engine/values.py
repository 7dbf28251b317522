"""A patient's platelet counts as the history holds them: `Value`, one count, and `Values`, all
of them, held compactly. Pure.

A year of a hospital's counts is held at once by replay (and by the classifier for the patients
it owns), so `Values` keeps no object per count (issue 17: about 500 bytes a count before, a
hospital year 4.8 GiB): each count is one 66-byte row of a bytearray (the number, collection
and verification times as seconds since the epoch, arrival order, which of the patient's shared
parts it has, its event id's text: a UUID's 36 characters), the result ids and the counts as
reported are joined in one text, and what counts share (unit, status, population, code, flags,
comparator) is held once, by reference. A `Value` is made only when asked for (a full
evaluation, an alert's evidence) and is a copy: changing one changes nothing held. A lookup by
result id searches the joined text, which at the few hundred counts a history holds at most
costs less than a dict's memory.
"""

import json
import math
import struct
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

from schemas import Comparator, LabResult, PlateletCount, Population, ResultStatus

# number, collected and verified (seconds since the epoch), seq, shared parts, event id
_ROW = struct.Struct("=dddiH36s")
_ORDER = struct.Struct("=8xd8xi38x")  # of a row, only what orders it: collected, seq
_NO_TIME = float("-inf")  # verified_at unknown
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The epoch in each fixed zone met with a zero offset, by the zone's id (pydantic shares one zone
# for every "Z" it reads): a time minus the epoch in its own zone is computed without asking the
# zone for its offset, which costs several times more. The zone is held, so its id stays its own.
UTC_EPOCHS: dict[int, tuple[tzinfo, datetime]] = {id(UTC): (UTC, _EPOCH)}
_ZONES_KEPT = 64
_EVENT_ID_CHARS = 36  # a UUID's text, as ingest's event ids are: held in the row as it is
_OTHER_ID = bytes(_EVENT_ID_CHARS)  # in the row of an event id held beside it (see _row)
# The joined text: _SEP, then for each count its result id, _MID, the count as reported, _SEP.
_SEP, _MID, _ESC = "\x00", "\x02", "\x01"  # escaped within an id or a text (see _escaped)
_SHARED_KEPT = 4096  # distinct shared parts kept for reuse; past it, reuse starts again
# The changelog's JSON, as state.encode writes a record: compact, no check for cycles (rows are
# fresh lists).
JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
json_text = json.encoder.encode_basestring_ascii  # a str as JSON_ENCODER writes it


def code_of(result: LabResult) -> tuple[str, str]:
    return shared_code(result.code.system, result.code.code)


@lru_cache(maxsize=256)
def shared_code(system: str, code: str) -> tuple[str, str]:
    """One tuple per distinct code (ingest passes platelet codes only: a handful), shared by
    every count that has it: a year of counts would otherwise hold one copy each."""
    return system, code


@dataclass(slots=True)
class Value:
    """One platelet count in the history, reduced to what rules and evidence need; `seq` is its
    arrival order for this patient, `population` the patient's age group at collection."""

    result_id: str
    event_id: str
    number: float  # 10^9/L; the count as reported is kept too, for the evidence
    comparator: Comparator | None
    original_value: str
    original_unit: str
    status: ResultStatus
    at: datetime
    verified_at: datetime | None
    seq: int
    population: Population
    code: tuple[str, str] | None = None  # (system, code): 49497-1 is a smear estimate
    flags: tuple[str, ...] = ()  # the lab's own (HL7 table 0078)

    @property
    def count(self) -> PlateletCount:
        return PlateletCount(
            value_10e9_per_l=self.number,
            comparator=self.comparator,
            original_value=self.original_value,
            original_unit=self.original_unit,
        )

    @classmethod
    def of(
        cls, result: LabResult, count: PlateletCount, seq: int, population: Population
    ) -> "Value":
        return cls(
            result.result_id,
            result.event_id,
            count.value_10e9_per_l,
            count.comparator,
            count.original_value,
            count.original_unit,
            result.status,
            result.collected_at,
            result.verified_at,
            seq,
            population,
            code_of(result),
            result.abnormal_flags,
        )

    def to_json(self) -> list[Any]:
        """The count in the changelog's form, as from_json reads it."""
        return [
            self.result_id,
            self.event_id,
            self.number,
            self.comparator,
            self.original_value,
            self.original_unit,
            self.status.value,
            self.at.isoformat(),
            None if self.verified_at is None else self.verified_at.isoformat(),
            self.seq,
            self.population,
            list(self.code) if self.code else None,
            list(self.flags),
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> "Value":
        rid, eid, number, comparator, original, unit, status, at, verified, seq, population = data[
            :11
        ]
        code, flags = (data[11], data[12]) if len(data) > 11 else (None, ())  # before issue 14
        return cls(
            rid,
            eid,
            number,
            comparator,
            original,
            unit,
            ResultStatus(status),
            datetime.fromisoformat(at).astimezone(UTC),  # stored before times were held in UTC
            datetime.fromisoformat(verified).astimezone(UTC) if verified else None,
            seq,
            population,
            shared_code(code[0], code[1]) if code else None,
            tuple(flags),
        )


# What counts share: comparator, status, population, code, flags, unit.
_Shared = tuple[
    Comparator | None, ResultStatus, Population, tuple[str, str] | None, tuple[str, ...], str
]
_shared: dict[_Shared, _Shared] = {}


def _share(parts: _Shared) -> _Shared:
    """The one copy of `parts` every count with them refers to. Bounded: past _SHARED_KEPT
    distinct ones, reuse starts again from empty; a count then holds its own copy, which costs
    memory, never correctness."""
    shared = _shared.get(parts)
    if shared is None:
        if len(_shared) >= _SHARED_KEPT:
            _shared.clear()
        shared = _shared[parts] = parts
    return shared


_shared_jsons: dict[_Shared, tuple[str, str, str]] = {}


def _shared_json(parts: _Shared) -> tuple[str, str, str]:
    """The JSON of shared parts as a row has them: the comparator; the unit and status; the
    population, code and flags. Bounded as _share is."""
    known = _shared_jsons.get(parts)
    if known is None:
        if len(_shared_jsons) >= _SHARED_KEPT:
            _shared_jsons.clear()
        comparator, status, population, code, flags, unit = parts
        known = _shared_jsons[parts] = (
            JSON_ENCODER.encode(comparator),
            JSON_ENCODER.encode([unit, status.value])[1:-1],
            JSON_ENCODER.encode([population, list(code) if code else None, list(flags)])[1:-1],
        )
    return known


def _epoch_in(zone: tzinfo | None) -> datetime | None:
    """The epoch written in `zone`, when the zone is a fixed zero offset (UTC as pydantic or
    datetime has it); None otherwise."""
    known = UTC_EPOCHS.get(id(zone))
    if known is not None and known[0] is zone:
        return known[1]
    if zone is None or zone.utcoffset(None) != timedelta(0):  # a zone with DST answers None
        return None
    epoch = _EPOCH.replace(tzinfo=zone)
    if len(UTC_EPOCHS) < _ZONES_KEPT:
        UTC_EPOCHS[id(zone)] = (zone, epoch)
    return epoch


def epoch_seconds(at: datetime) -> float:
    """Seconds since the epoch, as Values holds times and what is compared with them (a UTC time
    from pydantic and one made here compare slowly: their zones differ). Exact to the
    microsecond until 2100 (a double's spacing is below half a microsecond there), so times
    held are given back exactly and compare as the times do."""
    zone = at.tzinfo
    known = UTC_EPOCHS.get(id(zone))
    if known is not None and known[0] is zone:  # _epoch_in, inlined: every result comes here
        return (at - known[1]).total_seconds()
    epoch = _epoch_in(zone)
    return (at - (_EPOCH if epoch is None else epoch)).total_seconds()


def _instant(seconds: float) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _held_id(event_id: str) -> bytes | None:
    """An event id as its row holds it: the text itself, when it is ASCII, without NUL and at
    most _EVENT_ID_CHARS long (a UUID's text, as ingest's ids are); None for any other id, which
    is then kept as text beside the rows."""
    if len(event_id) <= _EVENT_ID_CHARS and event_id.isascii() and "\0" not in event_id:
        return event_id.encode()
    return None


def _escaped(text: str) -> str:
    """A result id or reported count as the joined text holds it: without _SEP or _MID."""
    return text.replace(_ESC, _ESC + "1").replace(_SEP, _ESC + "0").replace(_MID, _ESC + "2")


def _unescaped(held: str) -> str:
    if _ESC not in held:
        return held
    return held.replace(_ESC + "2", _MID).replace(_ESC + "0", _SEP).replace(_ESC + "1", _ESC)


def _pair(entry: str) -> tuple[str, str]:
    """A count's result id and text as reported, from its entry in the joined text."""
    rid, text = entry.split(_MID)
    if _ESC in entry:
        return _unescaped(rid), _unescaped(text)
    return rid, text


def _plain(text: str) -> bool:
    return _SEP not in text and _ESC not in text and _MID not in text


class Values(MutableMapping[str, Value]):
    """A patient's counts by result id, in the order they were added (as a dict keeps them);
    assigning to a result id already held replaces its count in place."""

    __slots__ = ("_encoded", "_encoded_rows", "_joined", "_other_ids", "_rows", "_shared")

    def __init__(self, values: Iterable[Value] = ()) -> None:
        self._rows = bytearray()  # one _ROW per count
        self._joined = _SEP  # result ids and counts as reported (see _SEP)
        self._shared: list[_Shared] = []  # the distinct shared parts of this patient's counts
        self._other_ids: dict[str, str] | None = None  # event ids too long for a row, by result
        # The JSON of the first _encoded_rows rows, as `encoded` gives it: rows only ever added
        # at the end are encoded once, not at every record written (see `encoded`).
        self._encoded = ""
        self._encoded_rows = 0
        for value in values:
            self[value.result_id] = value

    def __len__(self) -> int:
        return len(self._rows) // _ROW.size

    def __iter__(self) -> Iterator[str]:
        return iter([rid for rid, _ in self._texts()])  # a copy: the caller may delete as it goes

    def __contains__(self, result_id: object) -> bool:
        return isinstance(result_id, str) and self.holds(result_id)

    def __getitem__(self, result_id: str) -> Value:
        index = self._index(result_id)
        if index is None:
            raise KeyError(result_id)
        return self._value(index)

    def __setitem__(self, result_id: str, value: Value) -> None:
        if result_id != value.result_id:
            raise ValueError(f"a count for {value.result_id} held as {result_id}")
        index = self._index(result_id)
        if index is None:
            self.append(value)
            return
        texts = self._texts()
        texts[index] = (result_id, value.original_value)
        self._joined = self._join(texts)
        self._forget_encoded()
        if self._other_ids is not None:
            self._other_ids.pop(result_id, None)
        parts = (
            value.comparator,
            value.status,
            value.population,
            value.code,
            value.flags,
            value.original_unit,
        )
        start = index * _ROW.size
        self._rows[start : start + _ROW.size] = self._row(
            result_id,
            value.event_id,
            value.number,
            parts,
            value.at,
            value.verified_at,
            value.seq,
            epoch_seconds(value.at),
        )

    def __delitem__(self, result_id: str) -> None:
        if result_id not in self:
            raise KeyError(result_id)
        self.remove({result_id})

    def get(self, result_id: str, default: Any = None) -> Any:
        index = self._index(result_id)
        return default if index is None else self._value(index)

    def values(self) -> list[Value]:  # type: ignore[override]  # a list: made once, not a view
        texts = self._texts()
        return [
            self._made(rid, text, row)
            for (rid, text), row in zip(texts, _ROW.iter_unpack(self._rows), strict=True)
        ]

    def items(self) -> list[tuple[str, Value]]:  # type: ignore[override]
        return [(v.result_id, v) for v in self.values()]

    def holds(self, result_id: str) -> bool:
        """Whether a count for `result_id` is held (`in`, without the type check)."""
        if _plain(result_id):
            return f"{_SEP}{result_id}{_MID}" in self._joined
        return self._find(result_id) >= 0

    def append(self, value: Value) -> None:
        """Add the count of a result id not held (the caller knows it is not)."""
        self.add(
            value.result_id,
            value.event_id,
            value.number,
            value.comparator,
            value.original_value,
            value.original_unit,
            value.status,
            value.at,
            value.verified_at,
            value.seq,
            value.population,
            value.code,
            value.flags,
            epoch_seconds(value.at),
        )

    def add(
        self,
        result_id: str,
        event_id: str,
        number: float,
        comparator: Comparator | None,
        original_value: str,
        original_unit: str,
        status: ResultStatus,
        at: datetime,
        verified_at: datetime | None,
        seq: int,
        population: Population,
        code: tuple[str, str] | None,
        flags: tuple[str, ...],
        at_seconds: float,
    ) -> None:
        """As append, from a Value's fields (and `at` as epoch_seconds gives it): no Value is
        made."""
        parts = (comparator, status, population, code, flags, original_unit)
        self._rows += self._row(
            result_id, event_id, number, parts, at, verified_at, seq, at_seconds
        )
        if not (_plain(result_id) and _plain(original_value)):
            result_id, original_value = _escaped(result_id), _escaped(original_value)
        self._joined += f"{result_id}{_MID}{original_value}{_SEP}"

    def add_new(
        self,
        result: LabResult,
        count: PlateletCount,
        seq: int,
        population: Population,
        code: tuple[str, str] | None,
        at_seconds: float,
        room: int,
    ) -> bool:
        """As `add`, for the path most results take: the count of `result` (collected at
        `at_seconds`), unless its result id, or the one it replaces, is held, or `room` counts
        are held already; then False, having added nothing. One call where there were several:
        this runs for nearly every result of a replay."""
        rows, joined, result_id = self._rows, self._joined, result.result_id
        if len(rows) >= room * _ROW.size:
            return False
        original_value, replaces = count.original_value, result.replaces_result_id
        plain = result_id.isprintable() and original_value.isprintable()  # none of _SEP, _MID, _ESC
        if (f"{_SEP}{result_id}{_MID}" in joined if plain else self._find(result_id) >= 0) or (
            replaces is not None and self.holds(replaces)
        ):
            return False
        parts = (
            count.comparator,
            result.status,
            population,
            code,
            result.abnormal_flags,
            count.original_unit,
        )
        index = self._shared_index(parts)
        event_id, verified_at = result.event_id, result.verified_at
        raw = _held_id(event_id)
        if raw is None:
            raw = _OTHER_ID
            self._other(result_id, event_id)
        verified = (
            _NO_TIME
            if verified_at is None
            else at_seconds + (verified_at - result.collected_at).total_seconds()
        )
        rows += _ROW.pack(count.value_10e9_per_l, at_seconds, verified, seq, index, raw)
        if plain:
            self._joined = f"{joined}{result_id}{_MID}{original_value}{_SEP}"
        else:
            self._joined = f"{joined}{_escaped(result_id)}{_MID}{_escaped(original_value)}{_SEP}"
        return True

    def any_flagged(self, flags: frozenset[str]) -> bool:
        """Whether a count held may have one of the lab's `flags`: False means none has (the
        flags a patient's counts have are among their few shared parts), without making Values."""
        return any(not flags.isdisjoint(parts[4]) for parts in self._shared)

    def event_id_of(self, result_id: str) -> str | None:
        """The event id of the count held for `result_id`, without making its Value."""
        index = self._index(result_id)
        if index is None:
            return None
        return self._event_id(result_id, _ROW.unpack_from(self._rows, index * _ROW.size)[5])

    def in_order(
        self, since: datetime | None = None, until: datetime | None = None, *, last: int = 0
    ) -> list[Value]:
        """The counts in collection order (then arrival), those collected from `since` to `until`
        (both included) only when given, and only the `last` of them when given; only those are
        made into Values."""
        low = float("-inf") if since is None else epoch_seconds(since)
        high = float("inf") if until is None else epoch_seconds(until)
        rows, size = self._rows, _ROW.size
        order = _ORDER.iter_unpack(rows)  # not the whole rows: only those chosen are made
        chosen = sorted((at, seq, i) for i, (at, seq) in enumerate(order) if low <= at <= high)
        if not chosen:
            return []
        entries = self._joined[1:-1].split(_SEP)
        return [
            self._made(*_pair(entries[i]), _ROW.unpack_from(rows, i * size))
            for _, _, i in chosen[-last:]
        ]

    def newest(self) -> datetime | None:
        return _instant(max(self._times())) if self._rows else None

    def oldest(self) -> datetime | None:
        return _instant(min(self._times())) if self._rows else None

    def by_age(self) -> list[str]:
        """The result ids, oldest collected first (ties by result id)."""
        ids = [rid for rid, _ in self._texts()]
        return [rid for _, rid in sorted(zip(self._times(), ids, strict=True))]

    def collected_before(self, cutoff: datetime) -> set[str]:
        limit = epoch_seconds(cutoff)
        texts = self._texts()
        return {rid for (rid, _), at in zip(texts, self._times(), strict=True) if at < limit}

    def remove(self, result_ids: set[str]) -> None:
        """Forget the counts of `result_ids` (those not held are ignored), in one pass."""
        texts = self._texts()
        kept = [i for i, (rid, _) in enumerate(texts) if rid not in result_ids]
        if len(kept) == len(texts):
            return
        size, rows = _ROW.size, self._rows
        self._rows = bytearray().join(rows[i * size : (i + 1) * size] for i in kept)
        self._joined = self._join([texts[i] for i in kept])
        self._forget_encoded()
        if self._other_ids is not None:
            for rid in result_ids:
                self._other_ids.pop(rid, None)

    def to_json(self) -> list[list[Any]]:
        """Each count in the changelog's form (as Value.from_json reads it), in order added."""
        return [value.to_json() for value in self.values()]

    def encoded(self) -> str:
        """`to_json` as JSON_ENCODER writes it, without the list's brackets. The rows encoded
        before are kept, and only rows added since are encoded: the classifier writes a
        patient's record after every batch, most often one count longer. Replacing or removing
        a count forgets what was kept (rare: a correction, the horizon, a shrink)."""
        done = self._encoded_rows
        if done < len(self):
            texts = self._texts()[done:]
            rows = _ROW.iter_unpack(self._rows[done * _ROW.size :])
            added = ",".join(
                self._row_json(rid, text, row) for (rid, text), row in zip(texts, rows, strict=True)
            )
            self._encoded = f"{self._encoded},{added}" if done else added
            self._encoded_rows = len(self)
        return self._encoded

    def _forget_encoded(self) -> None:
        self._encoded, self._encoded_rows = "", 0

    def _row_json(self, result_id: str, text: str, row: tuple[Any, ...]) -> str:
        """JSON_ENCODER.encode of the row's Value.to_json(), written directly: several times
        faster, and the parts counts share are written once (see _shared_json)."""
        number, at, verified, seq, shared, raw = row
        comparator, unit_status, population_code_flags = _shared_json(self._shared[shared])
        number_json = (
            float.__repr__(number) if math.isfinite(number) else JSON_ENCODER.encode(number)
        )
        verified_json = "null" if verified == _NO_TIME else f'"{_instant(verified).isoformat()}"'
        return (
            f"[{json_text(result_id)},{json_text(self._event_id(result_id, raw))},"
            f"{number_json},{comparator},{json_text(text)},{unit_status},"
            f'"{_instant(at).isoformat()}",{verified_json},{seq},{population_code_flags}]'
        )

    def _row(
        self,
        result_id: str,
        event_id: str,
        number: float,
        parts: _Shared,
        at: datetime,
        verified_at: datetime | None,
        seq: int,
        at_seconds: float,
    ) -> bytes:
        """A count's packed row, for `add` and for replacing a count in place: its shared parts
        found (or added) in `_shared`, an event id that does not fit a row kept beside it."""
        index = self._shared_index(parts)
        raw = _held_id(event_id)
        if raw is None:
            raw = _OTHER_ID
            self._other(result_id, event_id)
        if verified_at is None:
            verified = _NO_TIME
        else:  # within half a microsecond, so given back exactly; in the zone of `at` most often,
            verified = at_seconds + (verified_at - at).total_seconds()  # so no offset is asked
        return _ROW.pack(number, at_seconds, verified, seq, index, raw)

    def _shared_index(self, parts: _Shared) -> int:
        """Where `parts` are among the patient's shared parts, added when new."""
        shared = self._shared
        if shared and shared[-1] == parts:  # as the count before: the common case
            return len(shared) - 1
        parts = _share(parts)
        try:
            return shared.index(parts)
        except ValueError:
            shared.append(parts)
            return len(shared) - 1

    def _other(self, result_id: str, event_id: str) -> None:
        if self._other_ids is None:
            self._other_ids = {}
        self._other_ids[result_id] = event_id

    def _times(self) -> list[float]:
        return [at for at, _ in _ORDER.iter_unpack(self._rows)]

    def _texts(self) -> list[tuple[str, str]]:
        """Each count's result id and text as reported, in order added."""
        if len(self._joined) == 1:
            return []
        entries = self._joined[1:-1].split(_SEP)
        if _ESC in self._joined:
            return [_pair(entry) for entry in entries]
        return [tuple(entry.split(_MID)) for entry in entries]  # type: ignore[misc]

    @staticmethod
    def _join(texts: list[tuple[str, str]]) -> str:
        return _SEP + "".join(f"{_escaped(rid)}{_MID}{_escaped(text)}{_SEP}" for rid, text in texts)

    def _find(self, result_id: str) -> int:
        return self._joined.find(f"{_SEP}{_escaped(result_id)}{_MID}")

    def _index(self, result_id: str) -> int | None:
        at = self._find(result_id)
        return None if at < 0 else self._joined.count(_SEP, 0, at)

    def _event_id(self, result_id: str, raw: bytes) -> str:
        if self._other_ids is not None:
            other = self._other_ids.get(result_id)
            if other is not None:
                return other
        return raw.rstrip(b"\0").decode()

    def _value(self, index: int) -> Value:
        rid, text = self._texts()[index]
        return self._made(rid, text, _ROW.unpack_from(self._rows, index * _ROW.size))

    def _made(self, result_id: str, text: str, row: tuple[Any, ...]) -> Value:
        number, at, verified, seq, shared, raw = row
        comparator, status, population, code, flags, unit = self._shared[shared]
        return Value(
            result_id,
            self._event_id(result_id, raw),
            number,
            comparator,
            text,
            unit,
            status,
            _instant(at),
            None if verified == _NO_TIME else _instant(verified),
            seq,
            population,
            code,
            flags,
        )
