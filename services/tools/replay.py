"""Offline replay: the classifier's engine over files, no broker. Pure apart from reading files.

A tool beside the services, not part of the classifier: it reads inputs through ingest's public
reading API (services/ingest/reading.py) and runs the classifier's engine on them.

Inputs, in the order given: HL7 v2 files (messages separated by blank lines or MLLP-framed),
FHIR R4 Bundles or resources (JSON, Conditions included), or NDJSON of PlateletWatch events (lab
results, treatment context and diagnoses) or FHIR resources. The same ingest parsers and the same
engine as the services are used, so a hospital can tune its rules file on last month's data and
trust the result.
"""

import gc
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import yaml
from pydantic import ValidationError

from schemas import LabResult, PlateletAlert, clinical_context_adapter
from services.classifier.engine import History, apply
from services.classifier.rules import Rules, load_rules
from services.config import ConfigurationError, Settings
from services.ingest.reading import (
    Event,
    FeedContext,
    Filter,
    Outcome,
    Publish,
    Rejection,
    RejectReason,
    TreatmentTable,
    load_treatment_table,
    read_fhir_json,
    read_hl7v2,
    site_context,
)


@dataclass
class Summary:
    events: int = 0
    filtered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        lines = [f"events read: {self.events}", f"filtered: {self.filtered}"]
        lines.append(f"rejected: {sum(self.rejected.values())}")
        lines += [f"  {reason}: {n}" for reason, n in sorted(self.rejected.items())]
        lines.append(f"alerts: {sum(self.alerts.values())}")
        lines += [f"  {kind}: {n}" for kind, n in sorted(self.alerts.items())]
        return lines


Read = Event | Filter | Rejection
"""An event to replay, or what became of an input that is not one."""
_NOT_EVENTS = (Filter, Rejection)
_lab_result = LabResult.__pydantic_validator__.validate_json  # LabResult.model_validate_json
# NDJSON lines decoded in a row before their events are applied, in order: the decoder's code
# and data, then the engine's, stay in the processor's caches (for 10,000 and 100,000 patients,
# about 5 % faster than line by line; 256 lines at once measured slower again).
_LINES_AT_ONCE = 16


def _unwrapped(outcome: Outcome) -> Read:
    return outcome.event if isinstance(outcome, Publish) else outcome


def _read(path: Path, context: FeedContext, treatments: TreatmentTable) -> Iterator[Read]:
    """HL7 v2 messages, one FHIR JSON document, or NDJSON read a few lines at a time (a year of
    events need not fit in memory twice)."""
    with path.open("rb") as file:
        head = file.read(4096).lstrip(b"\xef\xbb\xbf\x0b \r\n\t")
    if head[:3] == b"MSH":
        yield from map(_unwrapped, read_hl7v2(path.read_bytes(), context, treatments))
        return
    with path.open(encoding="utf-8-sig", errors="replace") as lines:  # bad bytes: a rejection
        first = next((line for line in lines if not line.isspace()), None)
        if first is None:
            return
        if _is_json_object(first):  # a whole record on the first line: NDJSON
            lines.seek(0)
            numbered = enumerate(lines, start=1)
            while batch := list(islice(numbered, _LINES_AT_ONCE)):
                read: list[Read] = []
                for number, line in batch:
                    if '"result_id"' in line:  # a FHIR resource (extra keys) never validates
                        try:  # most lines: a lab result, read as _ndjson_line reads one, inline
                            result: LabResult | None = _lab_result(line)
                        except ValidationError:
                            result = None  # refused: _ndjson_line says why
                        if result is not None:
                            read.append(result)
                            continue
                    if not line.isspace():
                        read.append(_ndjson_line(line, number, path, context, treatments))
                yield from read
            return
    yield from map(_unwrapped, read_fhir_json(path.read_bytes(), context, treatments))


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _ndjson_line(
    line: str, number: int, path: Path, context: FeedContext, treatments: TreatmentTable
) -> Read:
    """One line: a lab result, a treatment or diagnosis, or a FHIR resource, told apart by their
    keys (a diagnosis event has a "kind" and no "category")."""
    try:
        if '"resourceType"' in line:
            (outcome,) = read_fhir_json(line.encode(), context, treatments)
            return _unwrapped(outcome)
        if '"result_id"' in line:
            result: LabResult = _lab_result(line)
            return result
        if '"category"' in line or '"kind"' in line:
            return clinical_context_adapter.validate_json(line)
        json.loads(line)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return Rejection(RejectReason.INVALID_JSON, f"{path.name}:{number}: not valid JSON")
        message = f"{path.name}:{number}: {error.error_count()} field errors"
        return Rejection(RejectReason.INVALID_FIELDS, message)
    except ValueError as error:
        return Rejection(RejectReason.INVALID_JSON, f"{path.name}:{number}: {error}")
    message = f"{path.name}:{number}: neither a lab result nor clinical context"
    return Rejection(RejectReason.INVALID_FIELDS, message)


def _count(summary: Summary, outcome: Rejection | Filter) -> None:
    if isinstance(outcome, Rejection):
        summary.rejected[outcome.reason.value] += 1
    else:
        summary.filtered += 1


def replay(
    paths: Iterable[Path],
    rules: Rules,
    treatments: TreatmentTable,
    context: FeedContext,
    summary: Summary,
    histories: dict[str, History] | None = None,
) -> Iterator[PlateletAlert]:
    """Every alert the engine raises over the inputs, in event order, as it is raised (a long
    replay holds no list of them); `summary` counts what was read. `histories`, when given,
    receives each patient's history by patient key (to see what replay holds).

    The cyclic garbage collector is paused meanwhile: the histories are long-lived and acyclic,
    and rescanning them as they grow cost more than half the run on a year of data.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        histories = {} if histories is None else histories
        replayed_at = datetime.now(UTC)  # every alert of one replay is raised at its start
        for path in paths:
            for event in _read(path, context, treatments):
                if isinstance(event, _NOT_EVENTS):
                    _count(summary, event)
                    continue
                summary.events += 1
                key = event.patient.identifier.key
                history = histories.get(key)
                if history is None:
                    history = histories[key] = History()
                for alert in apply(history, event, rules, replayed_at):
                    summary.alerts[alert.kind.value] += 1
                    yield alert
    finally:
        if collecting:
            gc.enable()


def replay_files(files: list[Path], rules_file: Path | None) -> int:
    """`plateletwatch replay`: alerts as JSON lines on stdout, a summary on stderr.

    Raises ConfigurationError naming a missing input file or an unusable rules file.
    """
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise ConfigurationError(f"no such file: {', '.join(missing)}")
    settings = Settings()
    try:
        rules = load_rules(rules_file or settings.classifier_rules_file)
    except (OSError, ValidationError, yaml.YAMLError) as error:
        raise ConfigurationError(f"unusable rules file: {error}") from error
    context = site_context(settings, datetime.now(UTC))
    treatments = load_treatment_table(settings.ingest_treatment_table_file)
    summary = Summary()
    for alert in replay(files, rules, treatments, context, summary):
        print(alert.model_dump_json())
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 0
