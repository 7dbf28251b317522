"""The classifier's CPU per event in process, without a broker: what the worker does for
each event (decode it from its JSON, `has_applied`, `apply`, `encode_within` the patient's
record), timed in parts over the classifier benchmark's events (10,000 patients, 100,000 events
by default), so that the engine's share of the live classifier's CPU can be followed apart from
the consumer's.

Run with `python -m benchmarks.classifier_engine` (figures merged into bench-results.json);
BENCH_CLASSIFIER_PATIENTS and BENCH_CLASSIFIER_EVENTS set the size, BENCH_ENGINE_ROUNDS the
rounds each figure is the best of (default 3). CPU time, so a shared machine disturbs it less.
"""

import os
import time
from datetime import UTC, datetime

from benchmarks.classifier_throughput import EVENTS, PATIENTS, generate
from benchmarks.results import record
from schemas import LabResult, clinical_context_adapter
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.classifier.state import encode_within
from services.config import Settings

ROUNDS = int(os.environ.get("BENCH_ENGINE_ROUNDS", "3"))


def per_event_us() -> dict[str, float]:
    """Microseconds of CPU per event for decoding, applying and encoding, each the best of
    ROUNDS rounds over every event (the patients' histories start empty each round)."""
    limit = Settings().classifier_state_limit_bytes
    rules = load_rules()
    events = [
        (isinstance(e, LabResult), e.patient.identifier.key, e.model_dump_json().encode())
        for e in generate(PATIENTS, EVENTS)
    ]
    clock = time.process_time
    best = {"decode": float("inf"), "apply": float("inf"), "encode": float("inf")}
    for _ in range(ROUNDS):
        histories: dict[str, History] = {}
        spent = dict.fromkeys(best, 0.0)
        for is_result, key, raw in events:
            started = clock()
            event = (
                LabResult.model_validate_json(raw)
                if is_result
                else clinical_context_adapter.validate_json(raw)
            )
            decoded = clock()
            history = histories.setdefault(key, History())
            history.has_applied(event)
            apply(history, event, rules, datetime.now(UTC))
            applied = clock()
            encode_within(history, limit)
            spent["decode"] += decoded - started
            spent["apply"] += applied - decoded
            spent["encode"] += clock() - applied
        best = {part: min(best[part], spent[part]) for part in best}
    return {
        f"classifier_engine_{part}_us_per_event": round(seconds / len(events) * 1e6, 1)
        for part, seconds in best.items()
    }


def main() -> None:
    record(per_event_us())


if __name__ == "__main__":
    main()
