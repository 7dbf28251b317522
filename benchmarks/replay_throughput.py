"""Replay throughput: the classifier engine over a generated year of results for 10,000 patients,
beside the JSON-decode rate of the same events, on one core, with the peak memory.

Run with `make bench` (figures merged into bench-results.json). BENCH_PATIENTS and
BENCH_RESULTS_PER_PATIENT scale the data set.
"""

import os
import random
import resource
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchmarks.results import record
from schemas import Coding, LabResult, Patient, PatientIdentifier, PlateletCount, stable_event_id
from services.classifier.replay import replay
from services.classifier.rules import load_rules
from services.ingest.codes import FeedContext
from services.ingest.treatments import load_treatment_table

PATIENTS = int(os.environ.get("BENCH_PATIENTS", "10000"))
PER_PATIENT = int(os.environ.get("BENCH_RESULTS_PER_PATIENT", "36"))
START = datetime(2025, 11, 1, 8, 0, tzinfo=UTC)
CODE = Coding(system="http://loinc.org", code="777-3")


def generate(path: Path) -> int:
    """A year of results, in arrival order across patients; a few patients run low for weeks."""
    rng = random.Random(7)
    patients = [
        Patient(
            identifier=PatientIdentifier(authority="BENCH", mrn=f"{n:06d}"),
            birth_date=date(1940 + n % 80, 1 + n % 12, 1 + n % 28),
        )
        for n in range(PATIENTS)
    ]
    count = 0
    with path.open("w") as out:
        for step in range(PER_PATIENT):
            for n, patient in enumerate(patients):
                low = n % 50 == 0  # 2 % of patients are severely thrombocytopenic
                value = rng.uniform(3, 40) if low else rng.uniform(120, 400)
                at = START + timedelta(days=step * 365 / PER_PATIENT, minutes=n % 600)
                rid = f"{patient.identifier.mrn}-{step}"
                result = LabResult(
                    event_id=stable_event_id("bench", rid),
                    source="json",
                    patient=patient,
                    result_id=rid,
                    code=CODE,
                    count=PlateletCount(
                        value_10e9_per_l=round(value, 1),
                        original_value=f"{value:.1f}",
                        original_unit="10*9/L",
                    ),
                    status="final",
                    collected_at=at,
                    verified_at=at + timedelta(minutes=40),
                    received_at=at + timedelta(minutes=41),
                )
                out.write(result.model_dump_json() + "\n")
                count += 1
    return count


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "year.ndjson"
        events = generate(path)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        with path.open() as lines:
            for line in lines:
                LabResult.model_validate_json(line)
        decode_seconds = time.perf_counter() - started
        context = FeedContext(received_at=datetime.now(UTC), local_zone=UTC)
        started = time.perf_counter()
        alerts, summary = replay([path], load_rules(), load_treatment_table(), context)
        replay_seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert summary.events == events, summary.lines()
    decode_rate = events / decode_seconds
    replay_rate = events / replay_seconds
    record(
        {
            "replay_patients": PATIENTS,
            "replay_events": events,
            "replay_alerts": len(alerts),
            "decode_results_per_s": round(decode_rate),
            "replay_results_per_s": round(replay_rate),
            "replay_share_of_decode_rate": round(replay_rate / decode_rate, 3),
            "replay_peak_rss_mb": round(peak_kb / 1024, 1),
            "replay_rss_growth_mb": round((peak_kb - rss_before) / 1024, 1),
        }
    )


if __name__ == "__main__":
    main()
